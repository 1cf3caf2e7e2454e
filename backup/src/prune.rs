//! Retention: which sets to keep (newest N, newest per day/ISO week/month for
//! so many periods) and which to delete. Counting periods, not days, means a
//! week of missed backups never prunes down to a single set. The newest
//! verified set and tagged sets (`pre-wipe`, `pre-migration`) are never deleted
//! unless asked; runbook and broken folders are left alone.

use crate::set::{SetInfo, SetKind};

/// The retention policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep the newest N sets.
    pub keep_last: u32,
    /// Keep the newest set of each of the last N days that have one.
    pub keep_daily: u32,
    /// Same per ISO week.
    pub keep_weekly: u32,
    /// Same per month.
    pub keep_monthly: u32,
    /// Apply the policy to tagged sets too.
    pub include_tagged: bool,
}

/// What happens to one set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Set name.
    pub name: String,
    /// Kept or deleted.
    pub keep: bool,
    /// Why it is kept (empty when deleted).
    pub reasons: Vec<String>,
}

/// Decides over complete sets (others are ignored). `newest_verified` names
/// the set that must be kept whatever the policy says.
pub fn decide(sets: &[SetInfo], p: &Policy, newest_verified: Option<&str>) -> Vec<Decision> {
    let mut complete: Vec<&SetInfo> = sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Complete(_)))
        .collect();
    complete.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    let mut out: Vec<Decision> = Vec::new();
    let mut last = 0u32;
    let mut buckets: [(u32, Option<String>); 3] = [(0, None), (0, None), (0, None)];
    let limits = [p.keep_daily, p.keep_weekly, p.keep_monthly];
    let labels = ["daily", "weekly", "monthly"];
    for (i, s) in complete.iter().enumerate() {
        let mut reasons = Vec::new();
        if i == 0 {
            reasons.push("newest".to_string());
        }
        if newest_verified == Some(s.name.as_str()) {
            reasons.push("newest verified".to_string());
        }
        let tagged = s.tag().is_some();
        if tagged && !p.include_tagged {
            reasons.push(format!("tagged {}", s.tag().unwrap_or_default()));
        } else {
            if last < p.keep_last {
                last += 1;
                reasons.push(format!("last {}", p.keep_last));
            }
            let keys = [
                s.created.format("%Y-%m-%d").to_string(),
                s.created.format("%G-W%V").to_string(),
                s.created.format("%Y-%m").to_string(),
            ];
            for k in 0..3 {
                let (count, cur) = &mut buckets[k];
                if cur.as_deref() != Some(keys[k].as_str()) && *count < limits[k] {
                    *count += 1;
                    *cur = Some(keys[k].clone());
                    reasons.push(format!("{} {}", labels[k], keys[k]));
                }
            }
        }
        out.push(Decision {
            name: s.name.clone(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::set::{Manifest, FORMAT, FORMAT_VERSION};
    use chrono::{DateTime, Duration, Utc};

    fn set(t: DateTime<Utc>, tag: Option<&str>) -> SetInfo {
        let name = t.format("%Y%m%dT%H%M%SZ").to_string();
        SetInfo {
            name: name.clone(),
            path: name.clone().into(),
            created: t,
            kind: SetKind::Complete(Box::new(Manifest {
                format: FORMAT.into(),
                format_version: FORMAT_VERSION,
                tool_version: "0".into(),
                name,
                tag: tag.map(String::from),
                created: t,
                finished: t,
                host: String::new(),
                compose_project: String::new(),
                chain_id: String::new(),
                chain_height: None,
                images: Default::default(),
                artifacts: Vec::new(),
            })),
        }
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.name.clone())
            .collect()
    }

    #[test]
    fn daily_policy_counts_days_that_have_sets_not_calendar_days() {
        // Two sets a day for 10 days, then a 20-day gap, then one more.
        let t0: DateTime<Utc> = "2026-10-01T02:00:00Z".parse().unwrap();
        let mut sets = Vec::new();
        for d in 0..10 {
            sets.push(set(t0 + Duration::days(d), None));
            sets.push(set(t0 + Duration::days(d) + Duration::hours(12), None));
        }
        sets.push(set(t0 + Duration::days(30), None));
        let p = Policy {
            keep_daily: 3,
            ..Policy::default()
        };
        let k = kept(&decide(&sets, &p, None));
        assert_eq!(
            k,
            ["20261031T020000Z", "20261010T140000Z", "20261009T140000Z"]
        );
    }

    #[test]
    fn full_policy_on_a_generated_history() {
        // One set a day at 02:00 for 120 days, plus a tagged one early on.
        let t0: DateTime<Utc> = "2026-06-01T02:00:00Z".parse().unwrap();
        let mut sets: Vec<SetInfo> = (0..120)
            .map(|d| set(t0 + Duration::days(d), None))
            .collect();
        sets.push(set(t0 + Duration::hours(5), Some("pre-wipe")));
        let p = Policy {
            keep_last: 2,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            include_tagged: false,
        };
        let d = decide(&sets, &p, None);
        let k = kept(&d);
        // 7 daily (the last 7 days cover last 2), weekly: newest of 4 ISO weeks
        // (this week's is a daily one), monthly: newest of each of the 4 months
        // (June..September), plus the tagged one.
        let newest = t0 + Duration::days(119); // 2026-09-28 (Mon)
        assert_eq!(k[0], newest.format("%Y%m%dT%H%M%SZ").to_string());
        assert!(k.contains(&"20260601T070000Z".to_string()), "tagged kept");
        let daily: Vec<_> = (0..7)
            .map(|i| {
                (newest - Duration::days(i))
                    .format("%Y%m%dT%H%M%SZ")
                    .to_string()
            })
            .collect();
        for n in &daily {
            assert!(k.contains(n), "{n} daily");
        }
        // Weekly: 4 ISO weeks with sets: this one (Mon 09-28), W39 (Sun 09-27,
        // a daily one), then the Sundays 09-20 and 09-13; not 09-06.
        for n in ["20260920T020000Z", "20260913T020000Z"] {
            assert!(k.contains(&n.to_string()), "{n} weekly: {k:?}");
        }
        assert!(!k.contains(&"20260906T020000Z".to_string()));
        // Monthly: the last day of Aug, Jul, Jun.
        for n in ["20260831T020000Z", "20260731T020000Z", "20260630T020000Z"] {
            assert!(k.contains(&n.to_string()), "{n} monthly: {k:?}");
        }
        assert_eq!(k.len(), 7 + 2 + 3 + 1, "{k:?}");
        assert_eq!(d.len(), 121);
    }

    #[test]
    fn never_deletes_newest_or_newest_verified_even_with_a_zero_policy() {
        let t0: DateTime<Utc> = "2026-06-01T02:00:00Z".parse().unwrap();
        let sets: Vec<SetInfo> = (0..5).map(|d| set(t0 + Duration::days(d), None)).collect();
        let d = decide(&sets, &Policy::default(), Some("20260602T020000Z"));
        assert_eq!(kept(&d), ["20260605T020000Z", "20260602T020000Z"]);
    }

    #[test]
    fn tagged_sets_are_pruned_only_when_asked() {
        let t0: DateTime<Utc> = "2026-06-01T02:00:00Z".parse().unwrap();
        let sets = vec![
            set(t0, Some("pre-migration")),
            set(t0 + Duration::days(1), None),
        ];
        let p = Policy::default();
        assert_eq!(kept(&decide(&sets, &p, None)).len(), 2);
        let p = Policy {
            include_tagged: true,
            ..Policy::default()
        };
        assert_eq!(kept(&decide(&sets, &p, None)), ["20260602T020000Z"]);
    }
}
