//! Steering new connections within a reuseport group with classic BPF.
//!
//! Closing a listening socket resets every connection still in its accept
//! queue. To shrink a group from N to M sockets without that, the activator
//! first attaches `SO_ATTACH_REUSEPORT_CBPF` with a program that returns a
//! random index below M, so the kernel only picks sockets 0..M-1 for new
//! connections; the sockets being removed then drain (their instances accept
//! what is queued), and are closed highest index first, once empty.
//!
//! The same programs steer around an instance that stopped accepting
//! ([`crate::health`]): [`Program::Pick`] maps a random number or the CPU id
//! onto a list of socket indices, so any subset of the group (not only a
//! prefix) gets the new connections, while the sockets left out keep their
//! queues.
//!
//! Why classic BPF and not `net.ipv4.tcp_migrate_req`: the sysctl is global and
//! would change every other service's behaviour behind the admin's back; a
//! cBPF program is per group, needs no eBPF loader, and also works for UDP.
//!
//! The index a reuseport program returns is a position in the kernel's array
//! of the group's sockets. Sockets are appended in `listen()` (TCP) or `bind()`
//! (UDP) order, and removing one moves the last into its place. Because the
//! activator creates sockets in index order and only ever closes the highest
//! index, position i is always socket i.

use distribute_config::Steering;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
const SKF_AD_RANDOM: u32 = 56;
const SKF_AD_CPU: u32 = 36;
// Classic BPF opcodes (linux/filter.h): class | size/op | mode/source.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_MOD | BPF_K` (0x04 | 0x90 | 0x00).
const BPF_ALU_MOD_K: u16 = 0x94;
/// `BPF_RET | BPF_A` (0x06 | 0x10).
const BPF_RET_A: u16 = 0x16;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
const BPF_JEQ_K: u16 = 0x15;
/// Most sockets a [`Program::Pick`] can list: 2 instructions each, and the
/// kernel takes at most `BPF_MAXINSNS` (4096) per program.
pub const MAX_PICK: usize = 2000;

fn insn(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Where a [`Program::Pick`] gets its number from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A random number per packet.
    Random,
    /// The id of the CPU processing the packet.
    Cpu,
}

/// A steering program for a reuseport group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Uniformly random among the first `m` sockets (`random() % m`).
    FirstM(u32),
    /// The socket of the CPU processing the packet (`cpu % m`).
    Cpu(u32),
    /// `to[source % to.len()]`: the number picks an entry of the list, which
    /// names the socket (at most [`MAX_PICK`] entries; an empty list acts
    /// like one entry 0).
    Pick {
        /// Random or CPU.
        source: Source,
        /// Socket indices.
        to: Vec<u32>,
    },
}

impl Program {
    /// The classic BPF instructions: load the random number or CPU id, take
    /// it modulo m, return it as the socket index (or, for `Pick`, compare
    /// it with 0, 1, … and return the listed index).
    pub fn instructions(&self) -> Vec<libc::sock_filter> {
        let (ancillary, m) = match self {
            Program::FirstM(m) => (SKF_AD_RANDOM, *m),
            Program::Cpu(m) => (SKF_AD_CPU, *m),
            Program::Pick { source, to } => {
                let ancillary = match source {
                    Source::Random => SKF_AD_RANDOM,
                    Source::Cpu => SKF_AD_CPU,
                };
                let to = &to[..to.len().min(MAX_PICK)];
                let mut v = vec![
                    insn(BPF_LD_W_ABS, SKF_AD_OFF.wrapping_add(ancillary)),
                    insn(BPF_ALU_MOD_K, (to.len() as u32).max(1)),
                ];
                for (i, &index) in (0u32..).zip(to) {
                    // A == i ? return index : skip the return.
                    v.push(libc::sock_filter {
                        code: BPF_JEQ_K,
                        jt: 0,
                        jf: 1,
                        k: i,
                    });
                    v.push(insn(BPF_RET_K, index));
                }
                v.push(insn(BPF_RET_K, to.first().copied().unwrap_or(0)));
                return v;
            }
        };
        vec![
            insn(BPF_LD_W_ABS, SKF_AD_OFF.wrapping_add(ancillary)),
            insn(BPF_ALU_MOD_K, m.max(1)),
            insn(BPF_RET_A, 0),
        ]
    }
}

/// Attaches `program` to the reuseport group that `member` belongs to
/// (replacing any earlier program).
pub fn attach(member: BorrowedFd<'_>, program: &Program) -> io::Result<()> {
    let mut prog = program.instructions();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads a sock_fprog pointing at `prog`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `program` for a group whose sockets are not at positions 0..open: socket
/// i is at `positions[i]` (a replaced config's old sockets still share the
/// reuseport group, see `ServedSocket::retire`). `None` (the kernel's hash) becomes
/// a random pick among the `open` sockets, so the others get nothing; sockets
/// in `avoid` are left out while the list keeps one entry.
pub fn relocate(program: Option<&Program>, open: u32, positions: &[u32], avoid: &[u32]) -> Program {
    let (source, mut to): (Source, Vec<u32>) = match program {
        None => (Source::Random, (0..open).collect()),
        Some(Program::FirstM(m)) => (Source::Random, (0..*m).collect()),
        Some(Program::Cpu(m)) => (Source::Cpu, (0..*m).collect()),
        Some(Program::Pick { source, to }) => (*source, to.clone()),
    };
    if to.iter().any(|i| !avoid.contains(i)) {
        to.retain(|i| !avoid.contains(i));
    }
    Program::Pick {
        source,
        to: to
            .iter()
            .map(|&i| positions.get(i as usize).copied().unwrap_or(i))
            .collect(),
    }
}

/// Back to the kernel's hash over all sockets of the group.
pub fn detach(member: BorrowedFd<'_>) -> io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: setsockopt with a pointer to a live c_int.
    let r = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: nothing attached.
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// The program for `steering` with `m` active sockets of `open`, a warm pool
/// of `warm`, and the active sockets in `healthy` (ascending) not stuck;
/// `None`: the kernel's own hash.
pub fn steering_program(
    steering: Steering,
    m: u32,
    open: u32,
    warm: u32,
    healthy: &[u32],
) -> Option<Program> {
    let all_healthy = healthy.is_empty() || healthy.len() as u32 == m;
    match steering {
        Steering::Hash if all_healthy && open > m => Some(Program::FirstM(m)),
        Steering::Hash if all_healthy => None,
        Steering::Hash => Some(Program::Pick {
            source: Source::Random,
            to: healthy.to_vec(),
        }),
        Steering::Cpu if all_healthy => Some(Program::Cpu(m)),
        // CPU c still maps to socket c % m; a stuck one's CPUs are dealt
        // out among the others.
        Steering::Cpu => Some(Program::Pick {
            source: Source::Cpu,
            to: (0..m)
                .map(|i| {
                    if healthy.contains(&i) {
                        i
                    } else {
                        healthy[i as usize % healthy.len()]
                    }
                })
                .collect(),
        }),
        Steering::Warm => {
            let r = warm.clamp(1, m.max(1));
            if all_healthy {
                return Some(Program::FirstM(r));
            }
            let pool: Vec<u32> = healthy.iter().copied().filter(|&i| i < r).collect();
            if pool.len() as u32 == r {
                return Some(Program::FirstM(r));
            }
            // The pool without its stuck members; if that leaves nobody,
            // the first healthy instance outside it (the monitor grows the
            // pool from there).
            let to = if pool.is_empty() {
                vec![healthy[0]]
            } else {
                pool
            };
            Some(Program::Pick {
                source: Source::Random,
                to,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::queued;
    use socket2::{Domain, Socket, Type};
    use std::net::SocketAddr;
    use std::os::fd::AsFd;

    #[test]
    fn relocated_programs_name_positions() {
        let pos = [3, 4, 1];
        assert_eq!(
            relocate(None, 3, &pos, &[]),
            Program::Pick {
                source: Source::Random,
                to: vec![3, 4, 1]
            }
        );
        assert_eq!(
            relocate(Some(&Program::Cpu(2)), 3, &pos, &[]),
            Program::Pick {
                source: Source::Cpu,
                to: vec![3, 4]
            }
        );
        // Socket 1 is about to move: left out, unless it is the only one.
        assert_eq!(
            relocate(Some(&Program::FirstM(3)), 3, &pos, &[1]),
            Program::Pick {
                source: Source::Random,
                to: vec![3, 1]
            }
        );
        assert_eq!(
            relocate(Some(&Program::FirstM(1)), 3, &pos, &[0]),
            Program::Pick {
                source: Source::Random,
                to: vec![3]
            }
        );
    }

    fn group(n: usize) -> (Vec<Socket>, SocketAddr) {
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut v = Vec::new();
        for _ in 0..n {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(128).unwrap();
            addr = s.local_addr().unwrap().as_socket().unwrap();
            v.push(s);
        }
        (v, addr)
    }

    fn connect_on_cpu(addr: SocketAddr, cpu: usize) -> std::net::TcpStream {
        std::thread::spawn(move || {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).unwrap();
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
            std::net::TcpStream::connect(addr).unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn cpu_program_picks_the_socket_of_the_sending_cpu() {
        let cpus = crate::sockets::cpus_in_affinity();
        if cpus < 2 {
            eprintln!("SKIPPED: needs 2 CPUs");
            return;
        }
        let (socks, addr) = group(2);
        attach(socks[0].as_fd(), &Program::Cpu(2)).unwrap();
        // On loopback the SYN is processed on the sending CPU.
        let a = connect_on_cpu(addr, 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            queued(socks[1].as_fd()).unwrap(),
            "CPU 1's connection is on socket 1"
        );
        assert!(!queued(socks[0].as_fd()).unwrap());
        drop(a);
    }

    #[test]
    fn steered_group_only_uses_the_first_m_sockets() {
        let (socks, addr) = group(4);
        attach(socks[3].as_fd(), &Program::FirstM(2)).unwrap();
        let conns: Vec<_> = (0..40)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(queued(socks[0].as_fd()).unwrap());
        assert!(queued(socks[1].as_fd()).unwrap());
        assert!(
            !queued(socks[2].as_fd()).unwrap(),
            "socket 2 got a connection"
        );
        assert!(
            !queued(socks[3].as_fd()).unwrap(),
            "socket 3 got a connection"
        );
        detach(socks[0].as_fd()).unwrap();
        let more: Vec<_> = (0..80)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            queued(socks[2].as_fd()).unwrap() || queued(socks[3].as_fd()).unwrap(),
            "after detach the kernel hash uses every socket again"
        );
        drop((conns, more));
    }

    #[test]
    fn pick_program_skips_the_sockets_left_out() {
        let (socks, addr) = group(4);
        let pick = Program::Pick {
            source: Source::Random,
            to: vec![0, 2, 3],
        };
        attach(socks[1].as_fd(), &pick).unwrap();
        let conns: Vec<_> = (0..60)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!queued(socks[1].as_fd()).unwrap(), "socket 1 was left out");
        for i in [0, 2, 3] {
            assert!(queued(socks[i].as_fd()).unwrap(), "socket {i} got nothing");
        }
        drop(conns);
    }

    /// The policy as a table: (mode, m, open, warm pool, healthy) → program.
    #[test]
    fn steering_program_table() {
        use Source::{Cpu, Random};
        let pick = |source, to: &[u32]| {
            Some(Program::Pick {
                source,
                to: to.to_vec(),
            })
        };
        let all: &[u32] = &[0, 1, 2, 3];
        // Socket 2 stuck.
        let no2: &[u32] = &[0, 1, 3];
        #[rustfmt::skip]
        type Case<'a> = (Steering, u32, u32, u32, &'a [u32], Option<Program>);
        let cases: &[Case] = &[
            // Nothing stuck: the kernel's hash, or the first m while a shrink drains.
            (Steering::Hash, 4, 4, 1, all, None),
            (Steering::Hash, 3, 4, 1, &all[..3], Some(Program::FirstM(3))),
            (Steering::Cpu, 4, 4, 1, all, Some(Program::Cpu(4))),
            (Steering::Cpu, 2, 4, 1, &all[..2], Some(Program::Cpu(2))),
            (Steering::Warm, 4, 4, 2, all, Some(Program::FirstM(2))),
            // The warm pool is at least 1 and at most m.
            (Steering::Warm, 4, 4, 0, all, Some(Program::FirstM(1))),
            (Steering::Warm, 2, 4, 9, &all[..2], Some(Program::FirstM(2))),
            // A stuck socket is left out.
            (Steering::Hash, 4, 4, 1, no2, pick(Random, &[0, 1, 3])),
            (Steering::Cpu, 4, 4, 1, no2, pick(Cpu, &[0, 1, 3, 3])),
            (Steering::Warm, 4, 4, 3, no2, pick(Random, &[0, 1])),
            (Steering::Warm, 4, 4, 2, no2, Some(Program::FirstM(2))),
            // A pool of only stuck sockets moves on to the first healthy one.
            (Steering::Warm, 4, 4, 1, &[1, 2, 3], pick(Random, &[1])),
            // Every socket stuck: nowhere better to go.
            (Steering::Hash, 4, 4, 1, &[], None),
            (Steering::Cpu, 4, 4, 1, &[], Some(Program::Cpu(4))),
            (Steering::Warm, 4, 4, 2, &[], Some(Program::FirstM(2))),
        ];
        for (mode, m, open, warm, healthy, want) in cases {
            assert_eq!(
                &steering_program(*mode, *m, *open, *warm, healthy),
                want,
                "{mode:?} m={m} open={open} warm={warm} healthy={healthy:?}"
            );
        }
    }
}
