//! The seam between `run` and where it sends: one implementation of [`Destination`] per
//! destination (`datadog`, `newrelic`, `otlp`, above this module), each taking its target
//! from the flags and the environment, building its payloads and reading its receiver's
//! replies. The crate root picks one (`for_cli`); `run` only reads aggregates, sends with
//! retries and reports.

use crate::{Cli, Shape, Skipped};
use cfn_core::aggregate::Aggregate;
use cfn_core::exit::{Exit, fail};

/// Where and how aggregates are sent.
pub trait Destination {
    /// The URL payloads are posted to (it may carry credentials: shown only through
    /// [`cfn_net::http::redact_url`]).
    fn url(&self) -> &str;

    /// The URL as `--dry-run` names it: whole for a vendor API (built from a fixed path);
    /// a URL from the environment may carry credentials and shows only its host.
    fn shown_url(&self) -> String {
        self.url().to_string()
    }

    /// Headers sent with every payload; their values are secrets, kept out of messages.
    fn headers(&self) -> Vec<(String, String)>;

    /// The payloads' media type.
    fn content_type(&self) -> &'static str;

    /// The receiver's largest payload before compression (`--max-payload` replaces it).
    fn max_payload(&self) -> usize;

    /// The payloads for `aggs`, each at most `max` bytes before compression; what cannot be
    /// sent as is is counted in `skipped`.
    fn payloads(
        &self,
        aggs: &[Aggregate],
        shape: &Shape,
        max: usize,
        skipped: &mut Skipped,
    ) -> Vec<Vec<u8>>;

    /// What a reply that accepted a payload says it did not take: data points rejected and
    /// the receiver's message.
    fn partial_rejection(&self, _body: &[u8]) -> Option<(i64, String)> {
        None
    }

    /// The message of a rejection, from its raw body and that body as text.
    fn rejection_message(&self, _raw: &[u8], text: &str) -> String {
        text.trim().to_string()
    }

    /// A payload as `--dry-run` prints it, on one line.
    ///
    /// # Errors
    /// A payload that cannot be shown.
    fn dry_run_line(&self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(payload.to_vec())
    }
}

/// The API key of a vendor API: from `--api-key-file`, else the variable `var`; none is
/// needed for a dry run (nothing is sent).
///
/// # Errors
/// Exit 78 when there is none.
pub fn api_key(cli: &Cli, var: &str) -> anyhow::Result<Option<String>> {
    if cli.dry_run {
        return Ok(None);
    }
    let key = cfn_net::http::read_secret(cli.api_key_file.as_deref(), var, "API key")?;
    key.map(Some).ok_or_else(|| {
        fail(
            Exit::Config,
            format!("no API key: set {var} or use --api-key-file FILE"),
        )
    })
}

/// A vendor API's URL: `--endpoint` (scheme, host and port) or `base`, then `path`.
pub fn api_url(cli: &Cli, base: &str, path: &str) -> String {
    let base = cli.endpoint.as_deref().unwrap_or(base);
    format!("{}{path}", base.trim_end_matches('/'))
}
