//! Group option lines (`GROUP:::name:value`): where a group runs in a
//! cluster.
//!
//! - `placement`: `every` (default: each node runs its own copy) or
//!   `exclusive` (at most one node of the cluster runs it; see
//!   `crate::cluster::owners`).
//! - `nodes`: the nodes that may run an exclusive group, most preferred
//!   first (default: every node, preferred in name order).
//! - `startup`: the level the group goes to when the daemon starts and
//!   no goal is stored for it (inittab's `initdefault`).

use super::ErrorKind;
use std::time::Duration;

/// Where a group runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Every,
    Exclusive,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Every => "every",
            Placement::Exclusive => "exclusive",
        }
    }
}

/// What a group's option lines say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupOpts {
    pub placement: Placement,
    /// Nodes allowed to run it, most preferred first; empty: every node.
    pub nodes: Vec<String>,
    /// The line of its `placement` option (0: none), for errors.
    pub line: usize,
    /// The level to go to at start-up when no goal is stored.
    pub startup: Option<String>,
}

impl GroupOpts {
    pub fn exclusive(&self) -> bool {
        self.placement == Placement::Exclusive
    }

    /// Whether `node` may run the group.
    pub fn allows(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }
}

/// The group option names.
pub const GROUP_OPTIONS: &[&str] = &["placement", "nodes", "startup"];

/// Apply one group option line to `opts`.
pub fn set(opts: &mut GroupOpts, name: &str, value: &str) -> Result<(), String> {
    match name {
        "placement" => {
            opts.placement = match value {
                "every" => Placement::Every,
                "exclusive" => Placement::Exclusive,
                _ => return Err("expected every or exclusive".into()),
            }
        }
        "nodes" => {
            let mut nodes: Vec<String> = Vec::new();
            for n in value.split(',').map(str::trim) {
                if n.is_empty() || n.len() > 255 {
                    return Err("expected node names of 1 to 255 bytes, comma-separated".into());
                }
                if n.contains('/') || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(format!(
                        "node name '{n}' holds a '/', blank or control character"
                    ));
                }
                if nodes.iter().any(|m| m == n) {
                    return Err(format!("node '{n}' is named twice"));
                }
                nodes.push(n.to_string());
            }
            opts.nodes = nodes;
        }
        "startup" => {
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err("expected a level: a word without blanks".into());
            }
            opts.startup = Some(value.to_string());
        }
        _ => unreachable!("checked by the caller"),
    }
    Ok(())
}

/// The timings that fence an exclusive group, from the lease TTL `ttl` and
/// the margin `margin` (setting `fence_margin`, default TTL/6): counted
/// from the send time S of the owner's last acknowledged renewal, the
/// owner renews every `renew`, begins a graceful stop at S + `stop_at`,
/// and its watchdog SIGKILLs the group at S + `kill_at`, before etcd can
/// expire the lease at S + TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceTimes {
    pub ttl: Duration,
    pub renew: Duration,
    pub stop_at: Duration,
    pub kill_at: Duration,
}

/// The smallest margin between the watchdog's SIGKILL and the lease's
/// expiry, and the smallest graceful window.
pub const MIN_MARGIN: Duration = Duration::from_millis(200);

impl FenceTimes {
    /// The timings of `ttl` and `margin`, or why they cannot fence: the
    /// rule is `TTL ≥ 1 s`, `margin ≥ 0.2 s` and `TTL/2 + 0.2 s ≤ TTL − margin`
    /// (a renewal is retried at least once before the stop begins, and the
    /// graceful stop has at least 0.2 s before the SIGKILL).
    pub fn of(ttl: Duration, margin: Option<Duration>) -> Result<FenceTimes, String> {
        let margin = margin.unwrap_or(ttl / 6).max(if margin.is_some() {
            Duration::ZERO
        } else {
            MIN_MARGIN
        });
        if ttl < Duration::from_secs(1) {
            return Err(format!(
                "lease_ttl {} s is too short to fence an exclusive group (at least 1 s)",
                ttl.as_secs_f64()
            ));
        }
        if margin < MIN_MARGIN {
            return Err(format!(
                "fence_margin {} s is below {} s: the watchdog's SIGKILL needs time before the lease expires",
                margin.as_secs_f64(),
                MIN_MARGIN.as_secs_f64()
            ));
        }
        if ttl / 2 + MIN_MARGIN > ttl.saturating_sub(margin) {
            return Err(format!(
                "fence_margin {} s leaves no graceful stop within lease_ttl {} s (the rule: lease_ttl/2 + 0.2 s <= lease_ttl - fence_margin)",
                margin.as_secs_f64(),
                ttl.as_secs_f64()
            ));
        }
        Ok(FenceTimes {
            ttl,
            renew: ttl / 3,
            stop_at: ttl / 2,
            kill_at: ttl - margin,
        })
    }
}

pub(super) fn unknown(group: &str, name: &str) -> ErrorKind {
    ErrorKind::UnknownGroupOption {
        group: group.to_string(),
        name: name.to_string(),
    }
}
