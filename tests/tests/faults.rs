//! Bad configs and bind failures: clear errors in the log, and the daemon keeps
//! serving its other configs.

use distribute_tests::{addr, assert_contains_all, get_hello, port, Activator};
use std::time::Duration;

#[test]
fn bad_configs_are_reported_and_the_rest_is_served() {
    let good = port(10);
    let taken = port(11);
    // Held by a plain listener without SO_REUSEPORT: our bind must fail cleanly.
    let _holder = std::net::TcpListener::bind(("127.0.0.1", taken)).expect("holding a port");
    let service =
        "[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 30s\nDynamicUser=yes\n";
    let configs = [
        ("good", format!("[Socket]\nListenStream=127.0.0.1:{good}\nDistribute=2\n\n{service}")),
        ("taken", format!("[Socket]\nListenStream=127.0.0.1:{taken}\nDistribute=2\n\n{service}")),
        ("unix", format!("[Socket]\nListenStream=/run/unix.sock\nDistribute=2\n\n{service}")),
        ("zero", format!("[Socket]\nListenStream=127.0.0.1:{}\nDistribute=0\n\n{service}", port(12))),
        ("absurd", format!("[Socket]\nListenStream=127.0.0.1:{}\nDistribute=100000\n\n{service}", port(13))),
        ("typo", format!("[Socket]\nListenStream=127.0.0.1:{}\nDistribute=2\n\n[Service]\nExecStart=@BIN@/distribute-hello\nRestartSec=5\n", port(14))),
    ];
    let configs: Vec<(&str, &str)> = configs.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let Some(a) = Activator::start("bad-configs", &configs) else {
        return;
    };
    let h = get_hello(addr(good), Duration::from_secs(10))
        .expect("the good config is served despite the bad ones");
    println!("good config served: {h:?}");
    let log = a.log();
    println!("--- activator log ---\n{log}");
    assert_contains_all(
        &log,
        &[
            // bind failure names the key, value, address and the OS error
            &format!("taken: ListenStream=127.0.0.1:{taken} (127.0.0.1:{taken}): bind: Address already in use"),
            // config errors name file:line and key
            "config/unix.socket:2: ListenStream=/run/unix.sock",
            "AF_UNIX",
            "config/zero.socket:3: Distribute=0",
            "config/absurd.socket:3: Distribute=100000",
            "config/typo.socket:7",
            "RestartSec",
        ],
    );
    a.assert_active();
}
