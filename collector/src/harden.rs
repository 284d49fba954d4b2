//! Process hardening for the agent: once the programs are loaded and attached, the agent
//! keeps only the capability it still needs (`CAP_BPF`, for map lookups and updates through
//! the `bpf()` syscall) and sets `no_new_privs`, so a compromise of the packet-parsing code
//! cannot re-attach programs, reconfigure interfaces or gain privileges through exec.
use caps::{CapSet, Capability, CapsHashSet};
use thiserror::Error;

/// Why hardening failed.
#[derive(Debug, Error)]
pub enum HardenError {
    /// A capability set could not be changed.
    #[error("dropping capabilities ({set}) failed")]
    Caps {
        /// Which set.
        set: &'static str,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("setting no_new_privs failed")]
    NoNewPrivs(#[source] std::io::Error),
}

/// What the agent keeps after attaching.
pub const KEPT: &[Capability] = &[Capability::CAP_BPF];

/// Drops every capability but [`KEPT`] from the effective, permitted, inheritable and
/// bounding sets, and sets `no_new_privs`. Returns the capabilities that were dropped.
pub fn drop_privileges() -> Result<Vec<Capability>, HardenError> {
    let keep: CapsHashSet = KEPT.iter().copied().collect();
    let before = caps::read(None, CapSet::Permitted).unwrap_or_default();
    // Bounding set first: dropping from it needs CAP_SETPCAP, which is about to go.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // A capability the kernel does not know is fine to skip.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let kept: CapsHashSet = before.intersection(&keep).copied().collect();
    for (set, name, target) in [
        (CapSet::Inheritable, "inheritable", CapsHashSet::new()),
        (CapSet::Effective, "effective", kept.clone()),
        (CapSet::Permitted, "permitted", kept.clone()),
    ] {
        caps::set(None, set, &target).map_err(|source| HardenError::Caps { set: name, source })?;
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(HardenError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let mut dropped: Vec<_> = before.difference(&kept).copied().collect();
    dropped.sort_by_key(|c| c.index());
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Runs in a forked child so the test process keeps its privileges.
    #[test]
    fn keeps_only_cap_bpf_and_sets_no_new_privs() {
        // SAFETY: fork in a test; the child only does async-signal-safe work plus the
        // capability calls under test, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = drop_privileges().is_ok()
                && caps::read(None, CapSet::Effective)
                    .map(|s| s.iter().all(|c| KEPT.contains(c)))
                    .unwrap_or(false)
                && caps::read(None, CapSet::Bounding)
                    .map(|s| s.iter().all(|c| KEPT.contains(c)))
                    .unwrap_or(false)
                // SAFETY: prctl query with integer arguments.
                && unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child kept more than CAP_BPF"
        );
    }
}
