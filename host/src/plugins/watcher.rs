//! Watches a directory and reports which files are complete and changed.
//!
//! Two triggers feed ONE reconciler: `notify` events (inotify) or a poll
//! timer, so both modes act identically. A file is acted on once it is
//! complete: at once when inotify saw it closed after writing or renamed
//! into place and it has not changed since (its stamp then is its stamp
//! now), otherwise once its size, mtime and inode have stayed the same
//! for the settle window. A file still being written is never taken, and
//! `cp` over a file or write-then-rename both show up as a change.

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
    /// A regular file (through a symlink or not). Anything else (a
    /// directory, a dangling symlink, a FIFO) is reported at once, so the
    /// manager refuses it with its reason instead of it being ignored.
    regular: bool,
}

impl Stamp {
    /// The stamp of `path` now: the file it names, else the entry itself.
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let (meta, regular) = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => (meta, true),
            _ => (std::fs::symlink_metadata(path).ok()?, false),
        };
        Some(Stamp { len: meta.len(), modified: meta.modified().ok(), inode: meta.ino(), regular })
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
    /// The directory scanned.
    dir: PathBuf,
    /// How long a file must stay unchanged to count as complete.
    settle: Duration,
    /// Which entries are watched (e.g. plugin files, not temporaries).
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
        self.scan_with(now, &[])
    }

    /// As [`scan`](Self::scan); `complete` are files known to be complete
    /// (closed after writing, or renamed into place), each with its stamp
    /// when that was seen: one still the same skips the settle window (a
    /// file written again since settles like any other).
    pub fn scan_with(&mut self, now: Instant, complete: &[(PathBuf, Stamp)]) -> Vec<Change> {
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
            // Not a file that could still be being written: nothing to settle.
            let known_complete = complete.iter().any(|(done, at)| done == path && *at == stamp) || !stamp.regular;
            match self.pending.get(path) {
                _ if known_complete => {
                    self.pending.remove(path);
                    self.acted.insert(path.clone(), stamp);
                    changes.push(Change::Ready(path.clone()));
                }
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
    /// Each wake carries the files inotify saw completed, with their stamp then.
    rx: mpsc::UnboundedReceiver<Vec<(PathBuf, Stamp)>>,
    /// Keeps the channel open while polling, so waiting on it waits.
    _tx: Option<mpsc::UnboundedSender<Vec<(PathBuf, Stamp)>>>,
    /// Keeps the inotify watch alive; `None` when polling.
    _watcher: Option<Box<dyn std::any::Any + Send>>,
    /// The poll interval when polling; `None` with inotify.
    poll: Option<Duration>,
}

/// The files an inotify event shows complete, or `None` for an event that
/// changes nothing (our own reads show up as access events).
fn completed(event: &notify::Event) -> Option<Vec<PathBuf>> {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(event.paths.clone()),
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
            Some(event.paths.last().cloned().into_iter().collect())
        }
        EventKind::Access(_) => None,
        _ => Some(Vec::new()),
    }
}

impl Trigger {
    /// Watches `dir` in `mode`; falls back to polling, with a log line
    /// saying why, when inotify cannot be set up.
    pub fn new(dir: &Path, mode: WatchMode, poll_interval: Duration) -> Trigger {
        let (tx, rx) = mpsc::unbounded_channel();
        if mode == WatchMode::Notify {
            let sender = tx.clone();
            // Each event wakes the reconciler at once (no debounce: a file
            // closed after writing or renamed into place is acted on as soon
            // as inotify says so); a burst queues up and one scan takes it all.
            let handler = move |event: notify::Result<notify::Event>| {
                let wake = match event {
                    // Stamped now: a write after this event changes the
                    // stamp, so the scan lets that file settle instead.
                    Ok(event) => completed(&event)
                        .map(|paths| paths.into_iter().filter_map(|p| Stamp::of(&p).map(|stamp| (p, stamp))).collect()),
                    // An error (e.g. a queue overflow): scan to be safe.
                    Err(_) => Some(Vec::new()),
                };
                if let Some(complete) = wake {
                    let _ = sender.send(complete);
                }
            };
            let watched = notify::recommended_watcher(handler).and_then(|mut watcher| {
                notify::Watcher::watch(&mut watcher, dir, RecursiveMode::NonRecursive).map(|()| watcher)
            });
            match watched {
                Ok(watcher) => {
                    return Trigger { rx, _tx: None, _watcher: Some(Box::new(watcher)), poll: None };
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    "could not watch {} with inotify ({e}); polling it every {poll_interval:?} instead",
                    dir.display()
                ),
            }
        }
        Trigger { rx, _tx: Some(tx), _watcher: None, poll: Some(poll_interval) }
    }

    /// Whether this trigger polls.
    pub fn is_polling(&self) -> bool {
        self.poll.is_some()
    }

    /// Waits for the next reason to scan; `soon` bounds the wait (a file is
    /// settling). Returns the files inotify saw completed meanwhile, each
    /// with its stamp when it was.
    pub async fn next(&mut self, soon: Option<Duration>) -> Vec<(PathBuf, Stamp)> {
        let wait = match (self.poll, soon) {
            (Some(p), Some(s)) => Some(p.min(s)),
            (p, s) => p.or(s),
        };
        let mut complete = match wait {
            Some(wait) => tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten().unwrap_or_default(),
            None => match self.rx.recv().await {
                Some(complete) => complete,
                None => std::future::pending().await,
            },
        };
        // Take whatever else is queued, so one scan handles it all.
        while let Ok(more) = self.rx.try_recv() {
            complete.extend(more);
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_is_taken_only_for_the_content_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.so");
        std::fs::write(&file, b"first").unwrap();
        let seen = Stamp::of(&file).unwrap();
        let mut reconciler = Reconciler::new(dir.path(), Duration::from_secs(60), |_| true);
        let now = Instant::now();
        assert_eq!(reconciler.scan_with(now, &[(file.clone(), seen)]), vec![Change::Ready(file.clone())]);
        // Written again after the event was stamped (a second `cp` mid-way):
        // the old completion does not skip the settle window for it.
        std::fs::write(&file, b"second, longer").unwrap();
        assert!(reconciler.scan_with(now, &[(file.clone(), seen)]).is_empty());
        assert!(reconciler.has_pending());
        // Its own completion does.
        let again = Stamp::of(&file).unwrap();
        assert_eq!(reconciler.scan_with(now, &[(file.clone(), again)]), vec![Change::Ready(file)]);
    }

    #[tokio::test]
    async fn a_poll_trigger_waits_its_interval() {
        // Regression: the poll trigger once returned at once (its channel
        // was closed), spinning a core.
        let dir = tempfile::tempdir().unwrap();
        let mut trigger = Trigger::new(dir.path(), WatchMode::Poll, Duration::from_millis(200));
        assert!(trigger.is_polling());
        let started = Instant::now();
        for _ in 0..3 {
            trigger.next(None).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(550), "3 polls took only {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn our_own_reads_do_not_wake_a_notify_trigger() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.so"), b"x").unwrap();
        let mut trigger = Trigger::new(dir.path(), WatchMode::Notify, Duration::from_secs(60));
        if trigger.is_polling() {
            eprintln!("skipped: inotify is not available here");
            return;
        }
        // Reading the directory and the file makes access events only.
        let _ = std::fs::read_dir(dir.path()).unwrap().count();
        let _ = std::fs::read(dir.path().join("a.so")).unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(400), trigger.next(None)).await;
        assert!(woke.is_err(), "a read woke the trigger");
        // A completed write does, and names the file (its creation may
        // wake the trigger first, on its own: each event wakes it at once).
        std::fs::write(dir.path().join("b.so"), b"y").unwrap();
        let b = dir.path().join("b.so");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let complete = tokio::time::timeout_at(deadline, trigger.next(None)).await.expect("the write was reported");
            if complete.iter().any(|(p, stamp)| *p == b && Some(*stamp) == Stamp::of(&b)) {
                break;
            }
        }
    }
}
