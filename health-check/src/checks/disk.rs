//! Disk check: space and inode usage per mount point, computed the way `df`
//! does (reserved blocks count as used for ordinary users).

use crate::check::{CheckResult, Item, Perf, Status};
use daon_common::config::HealthConfig;
use std::path::Path;

/// Usage of one filesystem, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Space used, percent (as `df`'s Use%).
    pub space: f64,
    /// Inodes used, percent (`None` when the filesystem has no inode limit).
    pub inodes: Option<f64>,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
}

/// Reads the usage of the filesystem holding `path`.
pub fn usage(path: &Path) -> std::io::Result<Usage> {
    let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let used = s.f_blocks.saturating_sub(s.f_bfree);
    let denom = used + s.f_bavail;
    let space = if denom == 0 {
        0.0
    } else {
        used as f64 * 100.0 / denom as f64
    };
    let inodes = (s.f_files > 0)
        .then(|| (s.f_files.saturating_sub(s.f_ffree)) as f64 * 100.0 / s.f_files as f64);
    Ok(Usage {
        space,
        inodes,
        avail_bytes: s.f_bavail.saturating_mul(s.f_frsize),
    })
}

fn grade(v: f64, warn: f64, crit: f64) -> Status {
    if v >= crit {
        Status::Critical
    } else if v >= warn {
        Status::Warning
    } else {
        Status::Ok
    }
}

/// Runs the disk check over the configured mount points.
pub fn run(cfg: &HealthConfig) -> CheckResult {
    let mut items = Vec::new();
    let mut perf = Vec::new();
    for p in &cfg.disk_paths {
        let label = p.display().to_string();
        match usage(p) {
            Err(e) => items.push(Item {
                name: label.clone(),
                status: Status::Unknown,
                message: format!("cannot stat {label}: {e}"),
            }),
            Ok(u) => {
                let s = grade(u.space, cfg.disk_warn_percent, cfg.disk_crit_percent);
                items.push(Item {
                    name: label.clone(),
                    status: s,
                    message: format!(
                        "{label} {:.1}% used (warn {}%, crit {}%), {} free",
                        u.space,
                        cfg.disk_warn_percent,
                        cfg.disk_crit_percent,
                        human_bytes(u.avail_bytes)
                    ),
                });
                perf.push(
                    Perf::new(label.clone(), round1(u.space), "%")
                        .thresholds(Some(cfg.disk_warn_percent), Some(cfg.disk_crit_percent))
                        .bounds(Some(0.0), Some(100.0)),
                );
                if let Some(i) = u.inodes {
                    let s = grade(i, cfg.inode_warn_percent, cfg.inode_crit_percent);
                    items.push(Item {
                        name: format!("{label} inodes"),
                        status: s,
                        message: format!("{label} inodes {i:.1}% used"),
                    });
                    perf.push(
                        Perf::new(format!("{label} inodes"), round1(i), "%")
                            .thresholds(Some(cfg.inode_warn_percent), Some(cfg.inode_crit_percent))
                            .bounds(Some(0.0), Some(100.0)),
                    );
                }
            }
        }
    }
    let ok = items
        .iter()
        .filter(|i| !i.name.ends_with(" inodes"))
        .map(|i| i.message.split(" (warn").next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join(", ");
    CheckResult::from_items("disk", items, ok).with_perf(perf)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_at_thresholds() {
        assert_eq!(grade(79.9, 80.0, 90.0), Status::Ok);
        assert_eq!(grade(80.0, 80.0, 90.0), Status::Warning);
        assert_eq!(grade(90.0, 80.0, 90.0), Status::Critical);
    }

    #[test]
    fn root_has_plausible_usage_and_threshold_below_usage_warns() {
        let u = usage(Path::new("/")).unwrap();
        assert!(u.space > 0.0 && u.space <= 100.0, "{u:?}");
        let cfg = HealthConfig {
            disk_paths: vec!["/".into()],
            disk_warn_percent: 0.0,
            disk_crit_percent: 100.0,
            inode_warn_percent: 100.0,
            inode_crit_percent: 100.0,
            ..HealthConfig::default()
        };
        let r = run(&cfg);
        assert_eq!(r.status, Status::Warning, "{r:?}");
    }

    #[test]
    fn missing_path_is_unknown() {
        let cfg = HealthConfig {
            disk_paths: vec!["/nonexistent/daon".into()],
            ..HealthConfig::default()
        };
        assert_eq!(run(&cfg).status, Status::Unknown);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512.0 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
