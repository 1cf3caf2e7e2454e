//! "Is there a recent backup I can trust?" — the newest complete set, if it
//! is young enough and verifies against its manifest. Gates that must not
//! proceed without a fresh backup (the reboot guard, the pre-launch audit)
//! ask this one question the same way.

use crate::{set, verify};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;

/// Ok(description) when the newest complete set in `dir` finished at most
/// `max_age` before `now` and verifies; Err(why not) otherwise.
pub fn newest_verified(
    dir: &Path,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let sets = set::list(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let (info, m) = sets
        .iter()
        .rev()
        .find_map(|s| s.manifest().map(|m| (s, m)))
        .ok_or_else(|| format!("no complete backup set in {}", dir.display()))?;
    let age = (now - m.finished).to_std().unwrap_or_default();
    let age_text = humantime::format_duration(Duration::from_secs(age.as_secs()));
    if age > max_age {
        return Err(format!(
            "the newest set {} is {age_text} old (limit {})",
            info.name,
            humantime::format_duration(max_age)
        ));
    }
    let bad: Vec<String> = verify::set(&info.path, m, &[])
        .into_iter()
        .flat_map(|c| c.problems)
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "the newest set {} does not verify: {}",
            info.name,
            bad.join("; ")
        ));
    }
    Ok(format!("set {} verified, {age_text} old", info.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_missing_directory_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = newest_verified(dir.path(), Duration::from_secs(60), Utc::now()).unwrap_err();
        assert!(e.contains("no complete backup set"), "{e}");
        let e = newest_verified(
            &dir.path().join("nope"),
            Duration::from_secs(60),
            Utc::now(),
        )
        .unwrap_err();
        assert!(e.contains("no complete backup set"), "{e}");
    }
}
