//! Removing a config whose instances are running, and reloading right after:
//! the removal drains in the background and every later reload finishes.
//! Ports: `port(150)` and `port(151)`.

use distribute_tests::{addr, get_hello, port, socket_config, wait_until, Activator};
use std::time::Duration;

#[test]
fn a_reload_after_removing_a_busy_config_finishes() {
    let (p16, p64) = (port(150), port(151));
    let busy = socket_config(
        p16,
        16,
        "DrainTimeoutSec=100ms\n",
        "@BIN@/distribute-hello --idle-timeout 60s",
        "DynamicUser=yes\n",
    );
    let Some(a) = Activator::start("removal-busy", &[("busy16", &busy)]) else {
        return;
    };
    // Bring (most of) the 16 instances up.
    for _ in 0..200 {
        get_hello(addr(p16), Duration::from_secs(10)).expect("served");
    }
    assert!(
        wait_until(Duration::from_secs(20), || a.instances("busy16@*").len()
            >= 12),
        "instances did not come up:\n{}",
        a.log()
    );
    // One reload removes it and adds a bigger one.
    std::fs::remove_file(a.sb.dir().join("config/busy16.socket")).expect("remove config");
    a.write_config(
        "next64",
        &socket_config(
            p64,
            64,
            "DrainTimeoutSec=100ms\n",
            "@BIN@/distribute-hello --idle-timeout 60s",
            "DynamicUser=yes\n",
        ),
    );
    a.reload();
    if !a.wait_log(Duration::from_secs(20), |l| {
        l.contains("busy16: removed; all its sockets are closed")
    }) {
        panic!(
            "the removal did not finish within 20 s (its drain is bounded by 10 s)\n\
             --- where the activator's threads wait ---\n{}\n--- log ---\n{}",
            a.where_blocked(),
            a.log()
        );
    }
    get_hello(addr(p64), Duration::from_secs(10)).expect("the new config serves");
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        if let Err(e) = a.try_reload() {
            panic!("reload {i} after the removal: {e:#}");
        }
    }
    a.assert_active();
}
