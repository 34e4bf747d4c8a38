//! Other processes of this machine, by pid: whether one still runs (a node
//! that wrote a status file, or made private plugin copies, may be gone).

/// Whether a process with id `pid` exists, whoever runs it.
pub fn is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negative ids name process groups, not a process.
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the
    // process exists and may be signalled. It reads no memory of ours.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    // EPERM: it exists, run by another user. Only ESRCH means it is gone.
    sent || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_runs_and_an_impossible_pid_does_not() {
        assert!(super::is_running(std::process::id()));
        // pid_max on Linux is at most 2^22.
        assert!(!super::is_running(2_147_483_000));
        assert!(!super::is_running(0));
    }
}
