//! The bench's load: N keep-alive HTTP/1.1 connections, each sending one
//! prepared request after the other and reading the answer. Raw bytes on a
//! single-threaded runtime of its own, so the client costs little and the
//! same for every server it is pointed at.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A POST with a form body, ready to send.
pub fn form_post(host: SocketAddr, path: &str, authorization: &str, form: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .into_bytes()
}

/// What one run measured.
#[derive(Default)]
pub struct Sample {
    pub polls: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// `"<status> <error>"` → count.
    pub answers: HashMap<String, u64>,
    /// CPU time of the watched processes during the run, in their order,
    /// and of the load's own thread (last).
    pub cpu: Vec<Duration>,
}

impl Sample {
    pub fn per_sec(&self) -> f64 {
        self.polls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn add(&mut self, other: Sample) {
        self.polls += other.polls;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.cpu
            .resize(other.cpu.len().max(self.cpu.len()), Duration::ZERO);
        for (mine, theirs) in self.cpu.iter_mut().zip(other.cpu) {
            *mine += theirs;
        }
        for (k, v) in other.answers {
            *self.answers.entry(k).or_default() += v;
        }
    }

    /// CPU microseconds per poll of each watched process, then of the load.
    pub fn cpu_micros_per_poll(&self) -> Vec<f64> {
        self.cpu
            .iter()
            .map(|c| c.as_secs_f64() * 1e6 / self.polls.max(1) as f64)
            .collect()
    }

    /// The `p` quantile (0..=1) of the latencies; sorts them.
    pub fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

/// Sends `requests` round robin over `connections` connections to `addr`
/// for `duration`; connection `c` starts at request `c`. Measures the CPU
/// time the processes `watch` spend meanwhile.
pub fn run(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    connections: usize,
    duration: Duration,
    watch: &[u32],
) -> anyhow::Result<Sample> {
    let cpu_before: Vec<Duration> = watch
        .iter()
        .map(|pid| cpu_time(&format!("/proc/{pid}/stat")))
        .collect();
    let own_before = cpu_time("/proc/thread-self/stat");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + duration;
        let workers =
            (0..connections).map(|c| connection(addr, requests, c, connections, deadline));
        let results = futures::future::try_join_all(workers).await?;
        let mut sample = Sample {
            elapsed: started.elapsed(),
            ..Sample::default()
        };
        sample.cpu = watch
            .iter()
            .zip(&cpu_before)
            .map(|(pid, before)| cpu_time(&format!("/proc/{pid}/stat")).saturating_sub(*before))
            .collect();
        sample
            .cpu
            .push(cpu_time("/proc/thread-self/stat").saturating_sub(own_before));
        for (latencies, answers) in results {
            sample.polls += latencies.len() as u64;
            sample.latencies.extend(latencies);
            for (k, v) in answers {
                *sample
                    .answers
                    .entry(String::from_utf8_lossy(&k).into_owned())
                    .or_default() += v;
            }
        }
        Ok(sample)
    })
}

type Answers = HashMap<Vec<u8>, u64>;

async fn connection(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    first: usize,
    step: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, Answers)> {
    let mut latencies = Vec::new();
    let mut answers = Answers::new();
    let mut stream = connect(addr).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut i = first;
    while Instant::now() < deadline {
        let t = Instant::now();
        let (answer, close) =
            exchange(&mut stream, &requests[i % requests.len()], &mut buf).await?;
        latencies.push(t.elapsed());
        match answers.get_mut(answer) {
            Some(n) => *n += 1,
            None => {
                answers.insert(answer.to_vec(), 1);
            }
        }
        if close {
            stream = connect(addr).await?;
        }
        i += step;
    }
    Ok((latencies, answers))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `request`, reads one response into `buf`; returns
/// `"<status> <error code>"` and whether the server closes the connection.
async fn exchange<'a>(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &'a mut Vec<u8>,
) -> anyhow::Result<(&'a [u8], bool)> {
    stream.write_all(request).await?;
    buf.clear();
    let (head_end, length, close) = loop {
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("the server closed the connection mid-response");
        }
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| anyhow::anyhow!("a response without content-length: {head}"))?;
            break (end + 4, length, head.contains("\r\nconnection: close"));
        }
    };
    while buf.len() < head_end + length {
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("the server closed the connection mid-body");
        }
    }
    // "HTTP/1.1 400 ..." → "400", then the body's "error" value, moved to
    // the buffer's front (no allocation per response).
    let status: [u8; 3] = buf[9..12].try_into()?;
    let body = head_end..head_end + length;
    let error = find(&buf[body.clone()], b"\"error\":\"").map_or(0..0, |at| {
        let start = body.start + at + 9;
        let len = buf[start..body.end]
            .iter()
            .position(|b| *b == b'"')
            .unwrap_or(0);
        start..start + len
    });
    let len = error.len();
    buf.copy_within(error, 4);
    buf[..3].copy_from_slice(&status);
    buf[3] = b' ';
    buf.truncate(4 + len);
    Ok((&buf[..], close))
}

/// utime + stime of a `/proc/.../stat` file (zero when unreadable: not
/// Linux, or a Redis on another host).
fn cpu_time(stat: &str) -> Duration {
    let ticks = std::fs::read_to_string(stat).ok().and_then(|s| {
        // The fields after the command name, which is in parentheses.
        let rest = &s[s.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // Fields 14 and 15 of proc(5), counted from field 3 here.
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    });
    // USER_HZ is 100 on every Linux the bench runs on.
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
