//! Watches a directory and reports which files are complete and changed.
//!
//! Two triggers feed ONE reconciler: `notify` events (inotify) or a poll
//! timer, so both modes act identically. A file is acted on only once its
//! size, mtime and inode have stayed the same for the settle window: a file
//! still being written is never taken, and `cp` over a file or
//! write-then-rename both show up as a change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::RecursiveMode;
use tokio::sync::mpsc;

use crate::properties::WatchMode;

/// What identifies one version of a file's content, cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    /// The stamp of `path` now, if it is a regular file.
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        meta.is_file().then(|| Stamp { len: meta.len(), modified: meta.modified().ok(), inode: meta.ino() })
    }
}

/// A change the reconciler decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new or replaced file, complete and stable.
    Ready(PathBuf),
    /// A file that was acted on is gone.
    Removed(PathBuf),
}

/// Decides, from successive scans, which files changed and are complete.
pub struct Reconciler {
    dir: PathBuf,
    settle: Duration,
    select: fn(&Path) -> bool,
    /// The stamp last reported as Ready, per file.
    acted: HashMap<PathBuf, Stamp>,
    /// A changed stamp and when it was first seen.
    pending: HashMap<PathBuf, (Stamp, Instant)>,
}

impl Reconciler {
    /// Watches the files in `dir` for which `select` is true.
    pub fn new(dir: &Path, settle: Duration, select: fn(&Path) -> bool) -> Self {
        Reconciler { dir: dir.to_owned(), settle, select, acted: HashMap::new(), pending: HashMap::new() }
    }

    /// Records `file` as already handled in its current state (the initial scan).
    pub fn mark_acted(&mut self, file: &Path) {
        if let Some(stamp) = Stamp::of(file) {
            self.acted.insert(file.to_owned(), stamp);
        }
    }

    /// Whether a file is waiting to settle (the caller should scan again soon).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Scans the directory and returns what is ready to act on.
    pub fn scan(&mut self, now: Instant) -> Vec<Change> {
        let mut present = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if (self.select)(&path) {
                    present.push(path);
                }
            }
        }
        present.sort();
        let mut changes = Vec::new();
        for path in &present {
            let Some(stamp) = Stamp::of(path) else { continue };
            if self.acted.get(path) == Some(&stamp) {
                self.pending.remove(path);
                continue;
            }
            match self.pending.get(path) {
                Some((seen, since)) if *seen == stamp && now.duration_since(*since) >= self.settle => {
                    self.pending.remove(path);
                    self.acted.insert(path.clone(), stamp);
                    changes.push(Change::Ready(path.clone()));
                }
                Some((seen, _)) if *seen == stamp => {}
                _ => {
                    self.pending.insert(path.clone(), (stamp, now));
                }
            }
        }
        let gone: Vec<PathBuf> = self.acted.keys().filter(|p| !present.contains(p)).cloned().collect();
        for path in gone {
            self.acted.remove(&path);
            changes.push(Change::Removed(path));
        }
        self.pending.retain(|p, _| present.contains(p));
        changes
    }
}

/// Wakes the reconciler: on filesystem events, or every poll interval.
pub struct Trigger {
    rx: mpsc::UnboundedReceiver<()>,
    /// Keeps the inotify watch alive; `None` when polling.
    _debouncer: Option<Box<dyn std::any::Any + Send>>,
    poll: Option<Duration>,
}

impl Trigger {
    /// Watches `dir` in `mode`; falls back to polling, with a log line
    /// saying why, when inotify cannot be set up.
    pub fn new(dir: &Path, mode: WatchMode, poll_interval: Duration) -> Trigger {
        let (tx, rx) = mpsc::unbounded_channel();
        if mode == WatchMode::Notify {
            let handler = move |_events: notify_debouncer_full::DebounceEventResult| {
                let _ = tx.send(());
            };
            let watched = notify_debouncer_full::new_debouncer(Duration::from_millis(50), None, handler)
                .and_then(|mut debouncer| debouncer.watch(dir, RecursiveMode::NonRecursive).map(|()| debouncer));
            match watched {
                Ok(debouncer) => {
                    return Trigger { rx, _debouncer: Some(Box::new(debouncer)), poll: None };
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    "could not watch {} with inotify ({e}); polling it every {poll_interval:?} instead",
                    dir.display()
                ),
            }
        }
        Trigger { rx, _debouncer: None, poll: Some(poll_interval) }
    }

    /// Whether this trigger polls.
    pub fn is_polling(&self) -> bool {
        self.poll.is_some()
    }

    /// Waits for the next reason to scan; `soon` bounds the wait (a file is settling).
    pub async fn next(&mut self, soon: Option<Duration>) {
        let wait = match (self.poll, soon) {
            (Some(p), Some(s)) => Some(p.min(s)),
            (p, s) => p.or(s),
        };
        match wait {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, self.rx.recv()).await;
            }
            None => {
                if self.rx.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
