//! A small fault-injecting HTTP proxy for the object-store tests: it sits
//! between the binary and the S3 server on 127.0.0.1, answers a share of
//! requests with 503 SlowDown, drops a share of read connections without an
//! answer or halfway through the body, and can slow every request down. One
//! request per connection (it asks the server to close), so it needs to
//! understand only the request head and Content-Length.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Which faults to inject; `every` values of 0 disable that fault.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Every n-th request gets `503 SlowDown`.
    pub slow_down_every: usize,
    /// Every n-th GET is dropped before any answer.
    pub drop_get_every: usize,
    /// Every n-th GET is cut off halfway through the answer.
    pub cut_get_every: usize,
    /// A pause before forwarding each request.
    pub delay: Duration,
}

#[derive(Default)]
pub struct Counts {
    pub requests: AtomicUsize,
    pub puts: AtomicUsize,
    pub faults: AtomicUsize,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&counts), Arc::clone(&stop));
        let gets = Arc::new(AtomicUsize::new(0));
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (c, gets) = (Arc::clone(&c), Arc::clone(&gets));
                        thread::spawn(move || {
                            let _ = serve(client, upstream, faults, &c, &gets);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy { addr, counts, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one request (head and Content-Length body).
fn read_request(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
    let method = head.split(' ').next().unwrap_or("").to_string();
    // Ask the server to close after answering, so EOF ends its answer.
    let mut new_head = String::new();
    for line in head.split("\r\n") {
        if line.is_empty() || line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        new_head.push_str(line);
        new_head.push_str("\r\n");
    }
    new_head.push_str("Connection: close\r\n\r\n");
    Ok((method, new_head.into_bytes(), data[head_end..].to_vec()))
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    faults: Faults,
    counts: &Counts,
    gets: &AtomicUsize,
) -> std::io::Result<()> {
    let (method, head, body) = read_request(&mut client)?;
    let n = counts.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if method == "PUT" {
        counts.puts.fetch_add(1, Ordering::Relaxed);
    }
    thread::sleep(faults.delay);
    let hit = |every: usize, n: usize| every > 0 && n.is_multiple_of(every);
    if hit(faults.slow_down_every, n) {
        counts.faults.fetch_add(1, Ordering::Relaxed);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }
    let get = if method == "GET" {
        gets.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        0
    };
    if get > 0 && hit(faults.drop_get_every, get) {
        counts.faults.fetch_add(1, Ordering::Relaxed);
        return client.shutdown(Shutdown::Both);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    if get > 0 && hit(faults.cut_get_every, get) {
        counts.faults.fetch_add(1, Ordering::Relaxed);
        let head_end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        let cut = head_end + (answer.len() - head_end) / 2;
        client.write_all(&answer[..cut])?;
        return client.shutdown(Shutdown::Both);
    }
    client.write_all(&answer)?;
    client.shutdown(Shutdown::Both)
}
