//! The traffic driver: HTTP/1.0 requests to the nodes, one client key per request,
//! and a tally of what was sent.
//!
//! Each request carries client number `k` in both families' headers
//! (`x-client-ip: 10.0.x.y`, `x-client: client-k`), so every request adds exactly 1
//! to `http_req_cnt` of key `k` in both `.uncombined` tables of the node it hits.
//! The tally counts requests per (node, client) twice: `started` before the request
//! is written and `done` once the 200 is read. Any reading of a sum may never exceed
//! the `started` total of its scope (that would be double counting), and once the
//! traffic is paused, `started == done` is the exact truth.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::topology::{NODE_HTTP_PORT, client_ip, client_str};

/// Connect, read and write timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests per (node, client), started and completed.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests about to be written, by (node, client).
    pub started: BTreeMap<(String, u32), u64>,
    /// Requests answered with 200, by (node, client).
    pub done: BTreeMap<(String, u32), u64>,
}

impl Tally {
    /// Total requests for client `k` over the nodes in `scope`.
    pub fn sum(map: &BTreeMap<(String, u32), u64>, scope: &[String], k: u32) -> u64 {
        scope
            .iter()
            .map(|n| map.get(&(n.clone(), k)).copied().unwrap_or(0))
            .sum()
    }

    /// Every client number seen.
    pub fn clients(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.started.keys().map(|(_, k)| *k).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether every started request was answered.
    pub fn settled(&self) -> bool {
        self.started == self.done
    }
}

/// A shared tally.
pub type SharedTally = Arc<Mutex<Tally>>;

/// Locks the tally; a panicking holder cannot leave it half-updated (each update is
/// one map insert), so poisoning is ignored.
pub fn lock(t: &SharedTally) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends one request for client `k` to the node at `ip`, counting it in `tally`.
pub fn request(tally: &SharedTally, node: &str, ip: &str, k: u32) -> Result<()> {
    *lock(tally).started.entry((node.to_owned(), k)).or_default() += 1;
    http_get(ip, k).with_context(|| format!("request for client {k} to {node} ({ip})"))?;
    *lock(tally).done.entry((node.to_owned(), k)).or_default() += 1;
    Ok(())
}

fn http_get(ip: &str, k: u32) -> Result<()> {
    let addr: SocketAddr = format!("{ip}:{NODE_HTTP_PORT}")
        .parse()
        .context("node address")?;
    if !addr.ip().is_loopback() {
        bail!("{addr} is not loopback");
    }
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).context("connecting")?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .context("setting timeouts")?;
    let req = format!(
        "GET / HTTP/1.0\r\nHost: topo-test\r\nx-client-ip: {}\r\nx-client: {}\r\n\r\n",
        client_ip(k),
        client_str(k)
    );
    s.write_all(req.as_bytes()).context("writing")?;
    let mut resp = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut resp)
        .context("reading the response")?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.lines().next().unwrap_or_default();
    if !(status.starts_with("HTTP/1.") && status.split(' ').nth(1) == Some("200")) {
        bail!("answered `{status}`");
    }
    Ok(())
}

/// A set of requests: `rounds` passes over every (node, client) pair.
#[derive(Debug, Clone)]
pub struct Load {
    /// (node name, node ip).
    pub nodes: Vec<(String, String)>,
    /// Client numbers.
    pub clients: Vec<u32>,
    /// How many passes.
    pub rounds: u32,
}

impl Load {
    /// Sends the requests in a skewed order: client `k` gets `1 + (k + node) % 3`
    /// requests per round, so that every key's sum differs from node to node and a
    /// wrong source attribution cannot go unnoticed.
    pub fn run(
        &self,
        tally: &SharedTally,
        stop: Option<&AtomicBool>,
        deadline: Instant,
    ) -> Result<u64> {
        let mut sent = 0;
        for _ in 0..self.rounds {
            for (i, (node, ip)) in self.nodes.iter().enumerate() {
                for &k in &self.clients {
                    let reps = 1 + (k as usize + i) % 3;
                    for _ in 0..reps {
                        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                            return Ok(sent);
                        }
                        if Instant::now() >= deadline {
                            bail!("traffic deadline reached after {sent} requests");
                        }
                        request(tally, node, ip, k)?;
                        sent += 1;
                    }
                }
            }
        }
        Ok(sent)
    }
}

/// Traffic running in a thread until stopped (or its bounds are reached).
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<u64>>>,
}

impl Background {
    /// Starts sending `load` repeatedly (at most `max_requests` and `max_time`),
    /// pausing `pace` between requests.
    pub fn start(
        load: Load,
        tally: SharedTally,
        pace: Duration,
        max_requests: u64,
        max_time: Duration,
    ) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || -> Result<u64> {
            let deadline = Instant::now() + max_time;
            let mut sent = 0u64;
            'outer: loop {
                for (node, ip) in &load.nodes {
                    for &k in &load.clients {
                        if flag.load(Ordering::Relaxed)
                            || sent >= max_requests
                            || Instant::now() >= deadline
                        {
                            break 'outer;
                        }
                        request(&tally, node, ip, k)?;
                        sent += 1;
                        std::thread::sleep(pace);
                    }
                }
            }
            Ok(sent)
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the traffic and returns how many requests were sent.
    pub fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => match h.join() {
                Ok(r) => r,
                Err(_) => bail!("the traffic thread panicked"),
            },
            None => Ok(0),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_a_scope() {
        let mut t = Tally::default();
        t.started.insert(("a".into(), 1), 2);
        t.started.insert(("b".into(), 1), 3);
        t.started.insert(("b".into(), 2), 5);
        let scope = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(Tally::sum(&t.started, &scope, 1), 5);
        assert_eq!(Tally::sum(&t.started, &scope[..1], 2), 0);
        assert_eq!(t.clients(), vec![1, 2]);
        assert!(!t.settled());
    }

    #[test]
    fn a_refused_request_counts_as_started_only() {
        let tally = SharedTally::default();
        // 127.0.56.250:8080 has nobody listening in a unit test run.
        let err = request(&tally, "n", "127.0.56.250", 9).unwrap_err();
        assert!(format!("{err:#}").contains("client 9"), "{err:#}");
        let t = lock(&tally);
        assert_eq!(t.started.get(&("n".to_owned(), 9)), Some(&1));
        assert_eq!(t.done.get(&("n".to_owned(), 9)), None);
    }
}
