//! Distribute=N end to end: a real systemd (sandboxed), the real activator
//! from the shipped unit file, real instances, real loopback connections.

use distribute_tests::{addr, fire, get_hello, hello_config, port, tally, Activator};
use std::time::{Duration, Instant};

#[test]
fn four_instances_serve_400_connections() {
    let p = port(1);
    let Some(a) = Activator::start("four-instances", &[("web", &hello_config(p, 4, "30s"))]) else {
        return;
    };
    // The hand-off the activator picked for this systemd: the exec shim on
    // 252, systemd's own ExtraFileDescriptors= from 257 on.
    let version = a.sb.systemd_version();
    let (want, shim) = if version >= 257 {
        ("passing sockets with ExtraFileDescriptors=", false)
    } else {
        ("passing sockets through StandardInputFileDescriptor=", true)
    };
    a.assert_logged(want);
    let (hellos, failures) = fire(addr(p), 8, 50, Duration::ZERO);
    let exec = a.unit_property("web@0.service", "ExecStart");
    assert_eq!(
        exec.contains("systemd-distribute-exec"),
        shim,
        "systemd {version}: ExecStart={exec}"
    );
    let t = tally(&hellos);
    println!(
        "400 connections: {} answered, failures {failures:?}",
        hellos.len()
    );
    for (instance, pids) in &t {
        println!("  instance {instance}: {pids:?}");
    }
    assert_eq!(failures.total(), 0, "failures: {failures:?}\n{}", a.log());
    assert_eq!(hellos.len(), 400);
    assert_eq!(
        t.keys().cloned().collect::<Vec<_>>(),
        vec!["0", "1", "2", "3"],
        "every instance serves some connections"
    );
    // One PID per instance: each instance accepted its whole share itself.
    for (instance, pids) in &t {
        assert_eq!(
            pids.len(),
            1,
            "instance {instance} was started more than once: {pids:?}"
        );
    }
    let units = a.instances("web@*");
    assert_eq!(units.len(), 4, "{units:?}");
}

#[test]
fn idle_exit_then_reactivation() {
    let p = port(2);
    let Some(a) = Activator::start("idle-exit", &[("web", &hello_config(p, 2, "500ms"))]) else {
        return;
    };
    let first = get_hello(addr(p), Duration::from_secs(10)).expect("first request");
    println!("first answer: {first:?}");
    assert!(
        !a.instances("web@*").is_empty(),
        "an instance is running after a request"
    );
    a.assert_no_instances_within(
        "web@*",
        Duration::from_secs(15),
        "instances did not exit after the idle timeout",
    );
    println!("all instances exited on idle and were unloaded");
    let second = get_hello(addr(p), Duration::from_secs(10)).expect("request after idle exit");
    println!("after re-activation: {second:?}");
    assert_ne!(first.pid, second.pid, "a new instance process served it");
    assert!(
        a.log().contains("web@1.service: started") || a.log().contains("web@0.service: started"),
        "{}",
        a.log()
    );
}

#[test]
fn no_loss_around_idle_exit() {
    let p = port(3);
    // Instances exit after 50 ms idle while 10 clients connect at random
    // 0-200 ms spacing: instances exit and restart constantly, and connections
    // keep landing right at the moment an instance decides to exit.
    let Some(a) = Activator::start("no-loss", &[("web", &hello_config(p, 2, "50ms"))]) else {
        return;
    };
    let started = Instant::now();
    let (hellos, failures) = fire(addr(p), 10, 200, Duration::from_millis(200));
    let pids: std::collections::BTreeSet<u32> = hellos.iter().map(|h| h.pid).collect();
    println!(
        "2000 connections around idle exits in {:?}: {} answered by {} instance processes; {failures}",
        started.elapsed(),
        hellos.len(),
        pids.len(),
    );
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert_eq!(hellos.len(), 2000);
    assert!(
        pids.len() > 4,
        "instances should have exited and been re-activated many times, saw {} PIDs",
        pids.len()
    );
}
