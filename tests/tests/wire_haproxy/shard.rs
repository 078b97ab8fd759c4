//! `stktagg_wire::shard` agrees with HAProxy's own key-to-shard function.
//!
//! HAProxy >= 2.7 with `shards 2` sends each entry only to the peer of its shard.
//! Two mock peers (`s1` with `shard 1`, `s2` with `shard 2`) accept HAProxy's
//! sessions; entries are written through the runtime API into one table per key
//! type; every key must reach exactly the mock whose shard our function computes.
//! On 2.6 (no shards), HAProxy refuses the keyword, which is checked instead.

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};
use stktagg_tests::mock_peer::MockPeer;
use stktagg_tests::ports::{free_addr, listener};
use stktagg_tests::{Haproxy, HaproxyVersion};
use stktagg_wire::shard::{key_shard, local_id, table_seed};
use stktagg_wire::{Key, KeyType, Message};

/// Keys per key type (the issue asks for at least 100,000 of each).
const KEYS: u32 = 100_000;
/// `set table` commands per runtime-API line.
const PER_LINE: usize = 250;
const SECTION: &str = "sh";

/// The tables: (name, declaration after the name, key type).
const TABLES: [(&str, &str, KeyType); 5] = [
    ("t_ip", "type ip size 200k", KeyType::Ipv4),
    ("t_ipv6", "type ipv6 size 200k", KeyType::Ipv6),
    ("t_int", "type integer size 200k", KeyType::Sint),
    ("t_str", "type string len 32 size 200k", KeyType::String),
    ("t_bin", "type binary len 8 size 200k", KeyType::Binary),
];

/// The `i`th key of a table, as the CLI writes it and as our codec holds it.
fn key(kt: KeyType, i: u32) -> (String, Key) {
    match kt {
        KeyType::Ipv4 => {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            (ip.to_string(), Key::from_ipv4(ip))
        }
        KeyType::Ipv6 => {
            let ip = Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i) * 7919,
            );
            (ip.to_string(), Key::from_ipv6(ip))
        }
        KeyType::Sint => {
            let v = i.wrapping_mul(2_654_435_761);
            (v.to_string(), Key::from_u32(v))
        }
        KeyType::String => {
            let s = format!("client-{i}");
            (s.clone(), Key::from_str_bytes(s))
        }
        KeyType::Binary => {
            // Eight printable bytes: they travel in a header, and a string sample
            // becomes a binary key byte for byte.
            let text = format!("{:08x}", i.wrapping_mul(2_654_435_761));
            let k = Key::copy_from_slice(text.as_bytes());
            (text, k)
        }
    }
}

fn config(
    hap: std::net::SocketAddr,
    s1: std::net::SocketAddr,
    s2: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "global\n    stats socket {{stats_socket}} mode 600 level admin\n    nbthread 1\n    localpeer hap1\n"
    );
    let _ = writeln!(
        t,
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
    );
    let _ = writeln!(t, "peers {SECTION}\n    shards 2");
    let _ = writeln!(t, "    peer hap1 {hap}");
    let _ = writeln!(t, "    peer s1 {s1} shard 1");
    let _ = writeln!(t, "    peer s2 {s2} shard 2");
    for (name, decl, _) in TABLES {
        let _ = writeln!(t, "    table {name} {decl} expire 10m store gpc0");
    }
    // The runtime API cannot write binary keys: they come from traffic, one request
    // per key, the key in a header.
    let _ = writeln!(
        t,
        "\nfrontend fe\n    bind {http}\n    http-request track-sc0 req.hdr(x-k) table {SECTION}/t_bin\n    http-request return status 200"
    );
    t
}

/// Sends one pipelined request per binary key over keep-alive connections, and
/// reads every answer.
fn track_binary_keys(http: std::net::SocketAddr, keys: &[String]) {
    use std::io::{Read, Write};
    for chunk in keys.chunks(2_000) {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = String::new();
        for k in chunk {
            let _ = write!(req, "GET / HTTP/1.1\r\nhost: x\r\nx-k: {k}\r\n\r\n");
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut seen = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut text = Vec::new();
        while seen < chunk.len() {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "haproxy closed after {seen} answers");
            text.extend_from_slice(&buf[..n]);
            seen = text.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
        }
    }
}

/// What one mock received: per table name, the keys.
fn receive(p: &mut MockPeer, want: usize, deadline: Instant) -> HashMap<Bytes, HashSet<Key>> {
    let mut names: HashMap<u32, Bytes> = HashMap::new();
    let mut got: HashMap<Bytes, HashSet<Key>> = HashMap::new();
    let mut n = 0;
    while n < want && Instant::now() < deadline {
        let r = match p.recv(Duration::from_millis(500)) {
            Ok(r) => r,
            Err(stktagg_tests::HarnessError::Timeout { .. }) => continue,
            // A closed session receives nothing more: the assertions say what is missing.
            Err(_) => break,
        };
        match r.message {
            Message::TableDefinition(d) => {
                names.insert(d.table_id, d.name.clone());
            }
            Message::Update(u) => {
                if let Some(name) = names.get(&u.table_id)
                    && got.entry(name.clone()).or_default().insert(u.key)
                {
                    n += 1;
                }
            }
            _ => {}
        }
    }
    got
}

#[test]
fn our_key_to_shard_function_is_haproxys() {
    let (l1, l2) = (listener().unwrap(), listener().unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let http = free_addr().unwrap();
    let text = config(free_addr().unwrap(), a1, a2, http);
    let version = stktagg_tests::haproxy_version().unwrap();
    if version < HaproxyVersion::new(2, 7, 0) {
        let err = Haproxy::start_text(&text, "shard26")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shards"), "{err}");
        return;
    }
    let hap = Haproxy::start_text(&text, "shard").unwrap();
    let (p1, c1) = MockPeer::accept(&l1, "s1", Duration::from_secs(10)).unwrap();
    let (p2, c2) = MockPeer::accept(&l2, "s2", Duration::from_secs(10)).unwrap();
    assert_eq!((c1.as_str(), c2.as_str()), ("hap1", "hap1"));
    // Our expectation, key by key.
    let mut expected: [HashMap<Bytes, HashSet<Key>>; 2] = Default::default();
    for (name, _, kt) in TABLES {
        let wire = Bytes::from(format!("/{name}"));
        let seed = table_seed(&local_id(SECTION, &wire));
        for i in 0..KEYS {
            let k = key(kt, i).1;
            let shard = key_shard(seed, kt, &k, 2);
            assert!(shard == 1 || shard == 2);
            expected[shard as usize - 1]
                .entry(wire.clone())
                .or_default()
                .insert(k);
        }
    }
    // The mocks read (and heartbeat) all along, so that HAProxy never drops their
    // sessions while the keys are being written, however slow the machine.
    let total = |m: &HashMap<Bytes, HashSet<Key>>| m.values().map(HashSet::len).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(240);
    let readers = [(p1, total(&expected[0])), (p2, total(&expected[1]))]
        .map(|(mut p, want)| std::thread::spawn(move || receive(&mut p, want, deadline)));
    for (name, _, kt) in TABLES {
        let mut line = String::new();
        let mut pending = 0;
        let mut binary = Vec::new();
        for i in 0..KEYS {
            let text = key(kt, i).0;
            if kt == KeyType::Binary {
                binary.push(text);
                continue;
            }
            let _ = write!(line, "set table {SECTION}/{name} key {text} data.gpc0 1;");
            pending += 1;
            if pending == PER_LINE || i + 1 == KEYS {
                let answer = hap.api().command(line.trim_end_matches(';')).unwrap();
                assert!(answer.trim().is_empty(), "{answer}");
                line.clear();
                pending = 0;
            }
        }
        track_binary_keys(http, &binary);
    }
    let [r1, r2] = readers;
    let got1 = r1.join().unwrap();
    let got2 = r2.join().unwrap();
    for (name, _, kt) in TABLES {
        let wire = Bytes::from(format!("/{name}"));
        for (shard, got) in [(1, &got1), (2, &got2)] {
            let want = &expected[shard - 1][&wire];
            let have = got.get(&wire).cloned().unwrap_or_default();
            let wrong = have.difference(want).count();
            let missing = want.difference(&have).count();
            assert_eq!(
                (wrong, missing),
                (0, 0),
                "{name} ({kt:?}), shard {shard}: {wrong} keys HAProxy sent that we put in the other shard, {missing} we expected and HAProxy did not send"
            );
            assert!(want.len() > (KEYS as usize) / 3, "{name}: an uneven split");
        }
    }
}
