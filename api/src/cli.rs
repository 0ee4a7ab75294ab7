//! The `helpdesk` command line.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use domain::Role;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use projections::db::Backend;
use projections::event_log::LogFilter;
use projections::{audit, event_log, rebuild, Database};
use tokio_util::sync::CancellationToken;

use crate::auth::{parse_ttl, TokenKeys};
use crate::config::Config;
use crate::export::Format;
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
    /// Rebuild projections from the start of the log into shadow tables, then swap them in
    /// (the service keeps serving the old tables meanwhile).
    Replay {
        /// Only this projection (default: all).
        #[arg(long)]
        projection: Option<String>,
        /// Projections applying a batch of the shared read of the log at the same time
        /// (default: 2 on PostgreSQL, where the database's work for one overlaps the
        /// folding of another; 1 on SQLite, whose one writer would make them queue).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
        jobs: Option<u64>,
    },
    /// Write the event log to stdout in commit order (progress on stderr).
    Export {
        /// ndjson or csv.
        #[arg(long, value_enum, default_value = "ndjson")]
        format: Format,
        /// Only events that occurred at or after this instant (RFC 3339).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Only events that occurred before this instant (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Only this aggregate type (Ticket, Conversation, ...).
        #[arg(long)]
        aggregate_type: Option<String>,
        /// Only this organization.
        #[arg(long)]
        organization: Option<String>,
    },
    /// The tamper-evidence chain.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        action: AuditAction,
    },
}

/// `helpdesk audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute every organization's chain from the log; exits non-zero on a break.
    Verify {
        /// Only this organization.
        #[arg(long)]
        organization: Option<String>,
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
        Command::Replay { projection, jobs } => replay(config, projection, jobs).await,
        Command::Export {
            format,
            from,
            to,
            aggregate_type,
            organization,
        } => {
            let filter = LogFilter {
                organization,
                aggregate_type,
                from,
                to,
                ..LogFilter::default()
            };
            export(config, filter, format).await
        }
        Command::Audit {
            action: AuditAction::Verify { organization },
        } => audit_verify(config, organization).await,
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
    }
}

fn progress_bar(total: u64, prefix: &str, unit: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{prefix:>14}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))?
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    Ok(bar)
}

async fn replay(config: Config, only: Option<String>, jobs: Option<u64>) -> anyhow::Result<()> {
    let db = Database::connect(config.database_url.as_deref()).await?;
    db.migrate().await?;
    let projections = all_projections();
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let selected: Vec<_> = match &only {
        None => projections.clone(),
        Some(name) => {
            let found: Vec<_> = projections
                .iter()
                .filter(|p| p.name() == name)
                .cloned()
                .collect();
            if found.is_empty() {
                anyhow::bail!("unknown projection '{name}'; known: {}", names.join(", "));
            }
            found
        }
    };
    let at_once = jobs.map_or(
        match db {
            Backend::Postgres(_) => 2,
            Backend::Sqlite(_) => 1,
        },
        |jobs| jobs as usize,
    );
    let total = event_log::count_after(&db, event_log::Checkpoint::START, i64::MAX).await?;
    let bars = MultiProgress::new();
    let mut by_name = std::collections::HashMap::new();
    for projection in &selected {
        let bar = bars.add(progress_bar(total as u64, projection.name(), "events")?);
        by_name.insert(projection.name(), bar);
    }
    let outcomes = rebuild::rebuild_all(&db, &selected, at_once, |name, read| {
        if let Some(bar) = by_name.get(name) {
            bar.inc(read as u64);
        }
    })
    .await;
    let mut failed = Vec::new();
    for (name, outcome) in outcomes {
        let bar = &by_name[name];
        match outcome {
            Ok(rebuilt) => {
                bar.finish();
                bars.suspend(|| {
                    eprintln!(
                        "{name:>14} swapped in at position {} ({} events applied, swap held {:.0?})",
                        rebuilt.checkpoint.position, rebuilt.applied, rebuilt.swap
                    )
                });
            }
            Err(error) => {
                bar.abandon();
                failed.push(format!("rebuilding {name} failed: {error}"));
            }
        }
    }
    db.close().await;
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}

async fn export(config: Config, filter: LogFilter, format: Format) -> anyhow::Result<()> {
    let db = Database::connect(config.database_url.as_deref()).await?;
    db.migrate().await?;
    let total = event_log::count_filtered(&db, &filter, event_log::Checkpoint::START).await?;
    let bar = progress_bar(total as u64, "export", "events")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let written =
        crate::export::export(&db, &filter, format, &mut out, |n| bar.inc(n as u64)).await;
    match written {
        Ok(written) => {
            bar.finish();
            eprintln!("exported {written} events");
        }
        Err(error) => {
            bar.abandon();
            return Err(error);
        }
    }
    db.close().await;
    Ok(())
}

async fn audit_verify(config: Config, only: Option<String>) -> anyhow::Result<()> {
    let db = Database::connect(config.database_url.as_deref()).await?;
    db.migrate().await?;
    let organizations = match only {
        Some(organization) => vec![organization],
        None => audit::organizations(&db).await?,
    };
    let mut broken = Vec::new();
    for organization in &organizations {
        let links = audit::chain_length(&db, organization).await?;
        let bar = progress_bar(links as u64, organization, "events verified")?;
        let result = audit::verify(&db, organization, |n| bar.inc(n as u64)).await?;
        bar.finish_and_clear();
        if result.ok {
            println!(
                "{organization}: ok, {} events verified, {} not chained yet, head {}",
                result.checked_events,
                result.pending_events,
                result.head.as_deref().unwrap_or("(empty)")
            );
        } else {
            println!(
                "{organization}: BROKEN at position {} after {} good events: {}",
                result.first_bad_position.unwrap_or_default(),
                result.checked_events,
                result.problem.as_deref().unwrap_or("")
            );
            broken.push(result);
        }
    }
    db.close().await;
    if let Some(first) = broken
        .iter()
        .min_by_key(|r| r.first_bad_position.unwrap_or(i64::MAX))
    {
        anyhow::bail!(
            "the audit chain is broken in {} organization(s); first bad position {} ({})",
            broken.len(),
            first.first_bad_position.unwrap_or_default(),
            first.organization
        );
    }
    Ok(())
}
