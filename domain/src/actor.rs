//! The author of a command: an authenticated user or integration of one organization.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a caller is allowed to do, as carried in its token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the helpdesk: assigns, reassigns, configures.
    Admin,
    /// Works tickets; the token's subject is the agent id.
    Agent,
    /// Reads the log and reports; never writes.
    Analyst,
    /// A channel or bot integration acting for customers.
    Service,
}

impl Role {
    /// The role's name as used in tokens and event metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Analyst => "analyst",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            "analyst" => Ok(Role::Analyst),
            "service" => Ok(Role::Service),
            other => Err(format!(
                "unknown role '{other}': expected admin, agent, analyst or service"
            )),
        }
    }
}

/// Who issues a command: the token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token subject (for agents, the agent id).
    pub id: String,
    /// The role the token grants.
    pub role: Role,
}

impl Actor {
    /// Builds an actor from its id and role.
    pub fn new(id: impl Into<String>, role: Role) -> Self {
        Self {
            id: id.into(),
            role,
        }
    }
}
