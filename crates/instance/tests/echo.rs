//! Runs the `distribute-echo` binary with a TCP listener at fd 3 and a UDP socket
//! at fd 4.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{activated_command, stderr_of, wait_exit};

const ECHO: &str = env!("CARGO_BIN_EXE_distribute-echo");
const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn echoes_tcp_and_udp_then_exits_when_idle() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (taddr, uaddr) = (l.local_addr().unwrap(), u.local_addr().unwrap());
    let mut child = activated_command(ECHO, &["--idle-timeout", "300ms"], &[l.as_fd(), u.as_fd()])
        .env("LISTEN_FDNAMES", "tcp:udp")
        .spawn()
        .unwrap();

    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(taddr).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let msg = format!("message {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    drop(clients);

    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    for i in 0..3 {
        let msg = format!("datagram {i}");
        s.send_to(msg.as_bytes(), uaddr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (msg.as_bytes(), uaddr));
    }

    let status = wait_exit(&mut child, LIMIT);
    let log = stderr_of(&mut child);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("fds=3:tcp:stream,4:udp:datagram"), "{log}");
    assert!(log.contains("exit reason=idle"), "{log}");
    assert!(log.contains("connections=3 datagrams=3 bytes=60"), "{log}");
}
