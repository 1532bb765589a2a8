//! `mailroom jobs list|show|retry|drop`: the operators' view of the job queue, one Hub call
//! each. A running server sees a retried job at its next look (within a second).

use anyhow::{Context, Result, anyhow};
use mailroom_core::{JobQuery, JobState};
use uuid::Uuid;

use crate::admin::{cli_actor, with_hub};
use crate::cli::JobsCommand;
use crate::data::DataDir;
use crate::output::Output;

/// Runs one `jobs` command.
pub async fn run(data: &DataDir, out: &Output, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List { state, limit } => {
            let state = state.as_deref().map(JobState::parse).transpose()?;
            let (jobs, counts) = with_hub(data, async |hub| {
                let jobs = hub.jobs(JobQuery { state, limit }).await?;
                Ok((jobs, hub.job_counts().await?))
            })
            .await
            .context("cannot list jobs")?;
            out.jobs(&jobs, &counts)
        }
        JobsCommand::Show { id } => {
            let id = parse_id(&id)?;
            let (job, event) = with_hub(data, async |hub| {
                hub.job(id)
                    .await
                    .with_context(|| format!("cannot show job {id}"))
            })
            .await?;
            out.job(&job, event.as_ref())
        }
        JobsCommand::Retry { id } => operate(data, out, &id, true).await,
        JobsCommand::Drop { id } => operate(data, out, &id, false).await,
    }
}

/// `jobs retry` (`retry`) or `jobs drop`, as the OS user running the command.
async fn operate(data: &DataDir, out: &Output, id: &str, retry: bool) -> Result<()> {
    let id = parse_id(id)?;
    let (verb, outcome) = if retry {
        ("retry", "queued to run now")
    } else {
        ("drop", "dropped; it will not run again")
    };
    let job = with_hub(data, async |hub| {
        let actor = cli_actor();
        let job = if retry {
            hub.retry_job(&actor, id).await
        } else {
            hub.drop_job(&actor, id).await
        };
        job.with_context(|| format!("cannot {verb} job {id}"))
    })
    .await?;
    out.done(&format!(
        "job {} ({} of rule {}) {outcome}",
        job.id, job.handler, job.rule
    ))
}

fn parse_id(input: &str) -> Result<Uuid> {
    Uuid::parse_str(input.trim()).map_err(|_| {
        anyhow!(
            "{:?} is not a job id (a UUID, as `mailroom jobs list` shows)",
            input.chars().take(60).collect::<String>()
        )
    })
}
