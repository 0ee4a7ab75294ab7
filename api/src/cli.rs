//! The `helpdesk` command line.

use clap::{Parser, Subcommand};
use domain::Role;
use indicatif::{ProgressBar, ProgressStyle};
use projections::runner;
use projections::{event_log, Database};
use tokio_util::sync::CancellationToken;

use crate::auth::{parse_ttl, TokenKeys};
use crate::config::Config;
use crate::helpdesk::all_projections;

/// Event-sourced helpdesk backend.
#[derive(Debug, Parser)]
#[command(name = "helpdesk", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print a bearer token.
    Token {
        /// Organization.
        #[arg(long)]
        org: String,
        /// admin, agent, analyst or service.
        #[arg(long)]
        role: String,
        /// Subject (for agents: the agent id).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Print the GraphQL schema (SDL), as kept in docs/schema.graphql.
    Schema,
    /// Rebuild projections from the start of the log.
    Replay {
        /// Only this projection (default: all).
        #[arg(long)]
        projection: Option<String>,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => crate::server::serve(config, shutdown).await,
        Command::Migrate => {
            let db = Database::connect(config.database_url.as_deref()).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend_name());
            db.close().await;
            Ok(())
        }
        Command::Token {
            org,
            role,
            sub,
            ttl,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let ttl = parse_ttl(&ttl).map_err(anyhow::Error::msg)?;
            if org.trim().is_empty() || sub.trim().is_empty() {
                anyhow::bail!("--org and --sub must not be empty");
            }
            let keys = TokenKeys::from_config(&config)?;
            println!("{}", keys.issue(sub.trim(), org.trim(), role, ttl));
            Ok(())
        }
        Command::Replay { projection } => replay(config, projection).await,
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
    }
}

async fn replay(config: Config, only: Option<String>) -> anyhow::Result<()> {
    let db = Database::connect(config.database_url.as_deref()).await?;
    db.migrate().await?;
    let projections = all_projections();
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let selected: Vec<_> = match &only {
        None => projections.iter().collect(),
        Some(name) => {
            let found: Vec<_> = projections.iter().filter(|p| p.name() == name).collect();
            if found.is_empty() {
                anyhow::bail!("unknown projection '{name}'; known: {}", names.join(", "));
            }
            found
        }
    };
    let total = event_log::count_after(&db, event_log::Checkpoint::START, i64::MAX).await?;
    for projection in selected {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(projection.name().to_string());
        runner::reset(&db, projection.as_ref()).await?;
        runner::catch_up(&db, projection.as_ref(), |applied| bar.inc(applied as u64)).await?;
        bar.finish();
    }
    db.close().await;
    Ok(())
}
