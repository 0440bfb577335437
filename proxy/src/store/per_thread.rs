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
//! runtime on the same thread starts afresh. Each is pinged every 250 ms,
//! so an idle worker's connection that a Redis restart broke is mended
//! before a request needs it, as the shared one was by the job worker's
//! scans.
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::RedisResult;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::OnceCell;

use super::connection::Link;

/// How long a thread whose connection failed to open uses the shared one.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often an idle thread's connection is checked (see [`keep`]).
const PING_EVERY: Duration = Duration::from_millis(250);

/// Opens a thread's own [`Link`] to the deployment.
pub(super) type Opener = Box<dyn Fn() -> BoxFuture<'static, RedisResult<Link>> + Send + Sync>;

/// Per-thread connections to one deployment (one per [`super::connection::open`]).
pub(super) struct PerThread {
    id: u64,
    open: Opener,
}

/// A thread's link, once open, and whether its runtime still runs.
type Cell = Arc<OnceCell<(Link, Weak<()>)>>;

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
            let _ = cell.set((shared.clone(), keep(shared.clone())));
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
                    Some((link, alive)) if alive.strong_count() > 0 => {
                        return Lookup::Ready(link.clone())
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
    pub(super) async fn open(&self, cell: Cell) -> Option<Link> {
        let opened = cell
            .get_or_try_init(|| async {
                let link = (self.open)().await?;
                RedisResult::Ok((link.clone(), keep(link)))
            })
            .await;
        match opened {
            Ok((link, _)) => Some(link.clone()),
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
/// pings it every [`PING_EVERY`], and the answer is live while that task
/// is. A link opened on a runtime that has stopped lost its driver with
/// it. The ping finds a connection a Redis restart broke, so the redis
/// crate reconnects it before a request on this thread needs it (only a
/// command that fails makes it reconnect, and that command's request would
/// get a 503).
fn keep(link: Link) -> Weak<()> {
    let alive = Arc::new(());
    let watch = Arc::downgrade(&alive);
    tokio::spawn(async move {
        let _alive = alive;
        let mut link = link;
        loop {
            tokio::time::sleep(PING_EVERY).await;
            let _: RedisResult<()> = redis::cmd("PING").query_async(&mut link).await;
        }
    });
    watch
}
