//! Why a packaging job failed, and whether trying again can help: the one error type the
//! worker and what it calls (Benchling, the export reader) share. A leaf module.

/// Why a job failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Transient (Benchling or AWS unavailable, a network error): retried after a backoff,
    /// dead-lettered after `max_attempts`.
    Retry(String),
    /// Retrying cannot help (a hostile or oversized export, an unreadable job): dead-lettered
    /// at once.
    Permanent(String),
}

impl JobError {
    pub fn message(&self) -> &str {
        match self {
            JobError::Retry(m) | JobError::Permanent(m) => m,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Plain error messages (Benchling, S3, SQS calls) are transient unless said otherwise.
impl From<String> for JobError {
    fn from(m: String) -> Self {
        JobError::Retry(m)
    }
}

impl From<&str> for JobError {
    fn from(m: &str) -> Self {
        JobError::Retry(m.to_string())
    }
}
