//! The executable twin of an nginx round-robin TCP load balancer, for tests
//! that run several proxy instances behind one address.
//!
//! Each accepted connection goes to the next backend in round-robin order;
//! a backend whose connect fails (e.g. its process was SIGKILLed) is skipped,
//! each backend is tried at most once per connection, and when all of them
//! fail the client's connection is closed. Bytes are then copied both ways
//! until either side closes. Round robin is per connection: a client that
//! wants it per request disables keep-alive (reqwest's
//! `pool_max_idle_per_host(0)`).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one backend may take to accept a connection before it is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A running balancer; it stops (and drops every proxied connection) when dropped.
pub struct Balancer {
    addr: SocketAddr,
    counters: Arc<Vec<AtomicU64>>,
    accept: JoinHandle<()>,
}

impl Balancer {
    /// Listens on `127.0.0.1:0` and spreads connections over `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Balancer> {
        anyhow::ensure!(
            !backends.is_empty(),
            "a balancer needs at least one backend"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters: Arc<Vec<AtomicU64>> =
            Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let accept = tokio::spawn(accept_loop(listener, backends, counters.clone()));
        Ok(Balancer {
            addr,
            counters,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections each backend received, in the order given to [`Balancer::start`].
    pub fn connections_per_backend(&self) -> Vec<u64> {
        self.counters
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts every
        // connection task too.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    backends: Vec<SocketAddr>,
    counters: Arc<Vec<AtomicU64>>,
) {
    let mut connections = JoinSet::new();
    let mut next = 0usize;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // e.g. too many open files: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        // Connect here, not in the connection task, so that the next
        // connection starts after the backend that actually got this one.
        let Some((index, backend)) = connect_next(&backends, next).await else {
            drop(client);
            continue;
        };
        next = (index + 1) % backends.len();
        counters[index].fetch_add(1, Ordering::SeqCst);
        connections.spawn(proxy(client, backend));
    }
}

/// Tries every backend once, starting at `start`; the first that accepts wins.
async fn connect_next(backends: &[SocketAddr], start: usize) -> Option<(usize, TcpStream)> {
    for offset in 0..backends.len() {
        let index = (start + offset) % backends.len();
        if let Ok(Ok(stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backends[index])).await
        {
            return Some((index, stream));
        }
    }
    None
}

async fn proxy(mut client: TcpStream, mut backend: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    // Ends when both directions reached EOF or either side failed (a killed
    // backend resets the connection); dropping the streams closes both.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that greets with its name, then echoes until EOF.
    async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    socket.write_all(name.as_bytes()).await.unwrap();
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        (addr, task)
    }

    /// An address nothing listens on.
    async fn dead() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    /// Sends `hi` through the balancer and returns everything that came back.
    async fn exchange(balancer: &Balancer) -> String {
        let mut stream = TcpStream::connect(balancer.addr()).await.unwrap();
        stream.write_all(b"hi").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply).await;
        reply
    }

    #[tokio::test]
    async fn alternates_between_backends_and_skips_dead_ones() {
        let (a, task_a) = backend("A").await;
        let (b, task_b) = backend("B").await;
        let balancer = Balancer::start(vec![a, dead().await, b]).await.unwrap();
        assert!(balancer.url().starts_with("http://127.0.0.1:"));

        let mut replies = Vec::new();
        for _ in 0..4 {
            replies.push(exchange(&balancer).await);
        }
        assert_eq!(replies, ["Ahi", "Bhi", "Ahi", "Bhi"]);
        assert_eq!(balancer.connections_per_backend(), [2, 0, 2]);

        // B dies mid-test: every connection now goes to A.
        task_b.abort();
        let _ = task_b.await;
        for _ in 0..3 {
            assert_eq!(exchange(&balancer).await, "Ahi");
        }
        assert_eq!(balancer.connections_per_backend(), [5, 0, 2]);

        // Nobody left: the client's connection is closed.
        task_a.abort();
        let _ = task_a.await;
        assert_eq!(exchange(&balancer).await, "");
        assert_eq!(balancer.connections_per_backend(), [5, 0, 2]);

        // Dropped: the balancer stops listening.
        let addr = balancer.addr();
        drop(balancer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
