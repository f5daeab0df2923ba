//! A loopback TCP proxy in front of a stand-in that can be switched off and
//! on, so that a store outage and its end are real to the clients.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

pub struct OutageProxy {
    port: u16,
    down: Arc<AtomicBool>,
}

impl OutageProxy {
    /// Listens on a free loopback port and forwards to `target_port`.
    pub fn start(target_port: u16) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&down);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    // An outage: the connection is dropped unanswered.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let flag = Arc::clone(&flag);
                thread::spawn(move || pipe_both_ways(client, server, flag));
            }
        });
        OutageProxy { port, down }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuses new connections and cuts open ones at their next read.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn pipe_both_ways(client: TcpStream, server: TcpStream, down: Arc<AtomicBool>) {
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = {
        let down = Arc::clone(&down);
        thread::spawn(move || copy_until_down(client_read, server, down))
    };
    copy_until_down(server_read, client, down);
    let _ = upstream.join();
}

fn copy_until_down(mut from: TcpStream, mut to: TcpStream, down: Arc<AtomicBool>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
