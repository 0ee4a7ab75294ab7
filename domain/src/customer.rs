//! The CustomerPrivacy aggregate: a customer's erasures, kept in the log.
//!
//! Erasing a customer's personal data deletes their key outside the log (brief rule 11);
//! the log itself records *that* it happened, who asked and when — never what was erased.
//! One aggregate per customer (its id is the customer id, itself a pseudonymous UUID).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::Role;
use crate::command::{Command, DomainError};

/// A command on a customer's privacy record.
pub type CustomerCommand = Command<CustomerAction>;

/// What an admin does to a customer's personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerAction {
    /// Record an erasure. `key_deleted`: this request deleted the customer's key. When it
    /// found the key already gone, the erasure is only recorded if none was before (a
    /// request that deleted the key but failed to record it is completed, never doubled).
    Erase {
        /// Whether this request deleted the key.
        key_deleted: bool,
    },
}

/// What happened to a customer's personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    /// The customer's key was deleted: everything sealed with it reads as erased.
    CustomerDataErased {
        /// The customer's organization.
        organization: String,
    },
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        match self {
            CustomerEvent::CustomerDataErased { .. } => "CustomerDataErased",
        }
        .into()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// A customer's erasures so far.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPrivacy {
    organization: Option<String>,
    erasures: u32,
}

impl Aggregate for CustomerPrivacy {
    const TYPE: &'static str = "CustomerPrivacy";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CustomerCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        if self
            .organization
            .as_deref()
            .is_some_and(|o| o != command.organization)
        {
            return Err(DomainError::NotFound);
        }
        if command.actor.role != Role::Admin {
            return Err(DomainError::NotPermitted(
                "only an admin may erase a customer's data".into(),
            ));
        }
        let CustomerAction::Erase { key_deleted } = command.action;
        if key_deleted || self.erasures == 0 {
            sink.write(
                CustomerEvent::CustomerDataErased {
                    organization: command.organization,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CustomerEvent) {
        match event {
            CustomerEvent::CustomerDataErased { organization } => {
                self.organization = Some(organization);
                self.erasures += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::actor::Actor;

    fn erase(organization: &str, role: Role, key_deleted: bool) -> CustomerCommand {
        CustomerCommand {
            organization: organization.into(),
            actor: Actor::new("boss", role),
            action: CustomerAction::Erase { key_deleted },
        }
    }

    fn erased(organization: &str) -> CustomerEvent {
        CustomerEvent::CustomerDataErased {
            organization: organization.into(),
        }
    }

    #[test]
    fn an_admin_erasure_is_recorded() {
        TestFramework::<CustomerPrivacy>::with(())
            .given_no_previous_events()
            .when(erase("acme", Role::Admin, true))
            .then_expect_events(vec![erased("acme")]);
    }

    #[test]
    fn a_key_deleted_earlier_but_never_recorded_is_recorded_once() {
        TestFramework::<CustomerPrivacy>::with(())
            .given_no_previous_events()
            .when(erase("acme", Role::Admin, false))
            .then_expect_events(vec![erased("acme")]);
        TestFramework::<CustomerPrivacy>::with(())
            .given(vec![erased("acme")])
            .when(erase("acme", Role::Admin, false))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_customer_who_wrote_again_can_be_erased_again() {
        TestFramework::<CustomerPrivacy>::with(())
            .given(vec![erased("acme")])
            .when(erase("acme", Role::Admin, true))
            .then_expect_events(vec![erased("acme")]);
    }

    #[test]
    fn only_admins_of_the_customers_organization_may_erase() {
        TestFramework::<CustomerPrivacy>::with(())
            .given_no_previous_events()
            .when(erase("acme", Role::Agent, true))
            .then_expect_error(DomainError::NotPermitted(
                "only an admin may erase a customer's data".into(),
            ));
        TestFramework::<CustomerPrivacy>::with(())
            .given(vec![erased("acme")])
            .when(erase("globex", Role::Admin, true))
            .then_expect_error(DomainError::NotFound);
    }
}
