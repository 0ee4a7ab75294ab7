//! Given/when/then tests of the Ticket aggregate.
