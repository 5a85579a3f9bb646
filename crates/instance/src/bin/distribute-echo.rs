//! `distribute-echo`: a socket-activated TCP and UDP echo instance for
//! systemd-distribute. Exits when idle and drains on SIGTERM.

use std::os::fd::BorrowedFd;
use std::process::ExitCode;

use clap::Parser;
use distribute_instance::{Action, Handler, SocketKind};

mod common;

const PROG: &str = "distribute-echo";

/// Echo every byte received on the passed stream sockets, and every datagram
/// received on the passed datagram sockets back to its sender.
#[derive(Debug, Parser)]
#[command(name = PROG, version)]
struct Cli {
    #[command(flatten)]
    common: common::Common,
}

#[derive(Default)]
struct Echo {
    bytes: u64,
}

impl Handler for Echo {
    type Conn = ();

    fn on_connect(&mut self, _fd: BorrowedFd<'_>) {}

    fn on_data(&mut self, _conn: &mut (), input: &[u8], out: &mut Vec<u8>) -> Action {
        self.bytes += input.len() as u64;
        out.extend_from_slice(input);
        Action::Continue
    }

    fn on_datagram(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.bytes += input.len() as u64;
        out.extend_from_slice(input);
    }
}

fn main() -> ExitCode {
    common::main(PROG, |cli: &Cli| {
        common::serve(
            PROG,
            &cli.common,
            &[SocketKind::Stream, SocketKind::Datagram],
            Echo::default(),
            |echo| format!(" bytes={}", echo.bytes),
        )
    })
}
