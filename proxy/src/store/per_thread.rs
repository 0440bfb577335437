//! One Redis connection per thread that runs a single-threaded runtime (each
//! actix worker, and the main thread's): its commands are written and read
//! on the thread that asked, instead of hopping to the thread that drives a
//! shared connection and back. Two thread wake-ups per command were about a
//! quarter of a poll's CPU (`make bench`). Threads of a multi-threaded
//! runtime use the shared connection.
//!
//! A thread opens its connection on its first command, and every command of
//! that thread waits for it, so a task's writes and a `WAIT` after them go
//! down one connection. If opening fails, the thread uses the shared
//! connection and tries again a second later. A connection whose runtime
//! has stopped (its driver task went with it) is replaced, so a later
//! runtime on the same thread starts afresh. One that sent nothing for
//! half a second is pinged, so an idle worker's connection that a Redis
//! restart broke is mended before a request needs it, as the shared one
//! was by the job worker's scans.
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::RedisResult;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::OnceCell;

use super::connection::Link;

/// How long a thread whose connection failed to open uses the shared one.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a thread's connection, if it sent nothing meanwhile, is
/// checked (see [`keep`]).
const PING_EVERY: Duration = Duration::from_millis(500);

/// Opens a thread's own [`Link`] to the deployment.
pub(super) type Opener = Box<dyn Fn() -> BoxFuture<'static, RedisResult<Link>> + Send + Sync>;

/// Per-thread connections to one deployment (one per [`super::connection::open`]).
pub(super) struct PerThread {
    id: u64,
    open: Opener,
}

/// A thread's link, once open.
type Cell = Arc<OnceCell<Kept>>;

/// A thread's link, whether its runtime still runs, and whether it was
/// used since its last check.
pub(super) struct Kept {
    link: Link,
    alive: Weak<()>,
    used: Arc<AtomicBool>,
}

struct Entry {
    id: u64,
    owner: Weak<PerThread>,
    cell: Cell,
    retry_at: Option<Instant>,
}

thread_local! {
    static LINKS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// What a command on this thread goes down.
pub(super) enum Lookup {
    /// This thread's open link.
    Ready(Link),
    /// This thread's link, still to open (or being opened).
    Open(Cell),
    /// The shared link: not a single-threaded runtime, or opening failed
    /// a moment ago.
    Shared,
}

impl PerThread {
    /// `shared` was opened on this thread: if that is a single-threaded
    /// runtime's, it is also this thread's own (one connection fewer).
    pub(super) fn new(open: Opener, shared: &Link) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let per_thread = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            open,
        });
        if let Lookup::Open(cell) = per_thread.lookup() {
            let _ = cell.set(keep(shared.clone(), Arc::downgrade(&per_thread)));
        }
        per_thread
    }

    pub(super) fn lookup(self: &Arc<Self>) -> Lookup {
        let single_threaded = Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if !single_threaded {
            return Lookup::Shared;
        }
        LINKS.with(|links| {
            let mut links = links.borrow_mut();
            if let Some(entry) = links.iter_mut().find(|e| e.id == self.id) {
                match entry.cell.get() {
                    Some(kept) if kept.alive.strong_count() > 0 => {
                        kept.used.store(true, Ordering::Relaxed);
                        return Lookup::Ready(kept.link.clone());
                    }
                    // Its runtime stopped: open one on this runtime.
                    Some(_) => entry.cell = Cell::default(),
                    None if entry.retry_at.is_some_and(|at| Instant::now() < at) => {
                        return Lookup::Shared
                    }
                    None => {}
                }
                return Lookup::Open(entry.cell.clone());
            }
            // Connections of stores dropped since go now.
            links.retain(|e| e.owner.strong_count() > 0);
            let cell = Cell::default();
            links.push(Entry {
                id: self.id,
                owner: Arc::downgrade(self),
                cell: cell.clone(),
                retry_at: None,
            });
            Lookup::Open(cell)
        })
    }

    /// Opens this thread's link (once, however many commands wait for
    /// it); `None` if that failed, for now.
    pub(super) async fn open(self: &Arc<Self>, cell: Cell) -> Option<Link> {
        let opened = cell
            .get_or_try_init(|| async {
                RedisResult::Ok(keep((self.open)().await?, Arc::downgrade(self)))
            })
            .await;
        match opened {
            Ok(kept) => Some(kept.link.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "opening this thread's Redis connection failed; using the shared one");
                LINKS.with(|links| {
                    if let Some(entry) = links.borrow_mut().iter_mut().find(|e| e.id == self.id) {
                        entry.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                });
                None
            }
        }
    }
}

/// Keeps `link` for this runtime: a task that lives as long as the runtime
/// pings it every [`PING_EVERY`] unless it was used meanwhile, and the
/// link counts as live while that task is (a link opened on a runtime that
/// has stopped lost its driver with it). The ping finds a connection that
/// a Redis restart broke while it sat idle, so the redis crate reconnects
/// it before a request needs it: only a command that fails makes the crate
/// reconnect, and that command's request would get a 503. The task ends
/// with the store (`owner`).
fn keep(link: Link, owner: Weak<PerThread>) -> Kept {
    let alive = Arc::new(());
    let used = Arc::new(AtomicBool::new(false));
    let kept = Kept {
        link: link.clone(),
        alive: Arc::downgrade(&alive),
        used: used.clone(),
    };
    tokio::spawn(async move {
        let _alive = alive;
        let mut link = link;
        loop {
            tokio::time::sleep(PING_EVERY).await;
            if owner.strong_count() == 0 {
                return;
            }
            if !used.swap(false, Ordering::Relaxed) {
                let _: RedisResult<()> = redis::cmd("PING").query_async(&mut link).await;
            }
        }
    });
    kept
}
