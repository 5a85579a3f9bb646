//! `Steering=`: which instance gets which connection, on a real systemd.

use distribute_tests::{addr, get_hello, get_hellos, port, socket_config, tally, Activator, Hello};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A demo HTTP config with `Steering=STEERING`, running `distribute-hello ARGS`.
fn config(port: u16, n: u32, steering: &str, args: &str) -> String {
    socket_config(
        port,
        n,
        &format!("Steering={steering}\n"),
        &format!("@BIN@/distribute-hello {args}"),
        "DynamicUser=yes\n",
    )
}

fn on_cpu<T: Send + 'static>(cpu: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn cpu_steering_keeps_a_connection_on_its_cpu() {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(cpus >= 2, "this test needs 2 CPUs, found {cpus}");
    let p = port(40);
    let Some(a) = Activator::start(
        "steer-cpu",
        &[("web", &config(p, 2, "cpu", "--idle-timeout 30s"))],
    ) else {
        return;
    };
    for cpu in [0usize, 1] {
        let answers = on_cpu(cpu, move || get_hellos(addr(p), 20));
        let t = tally(&answers);
        println!("client on CPU {cpu}: {t:?}");
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            vec![cpu.to_string()],
            "every connection from CPU {cpu} went to instance {cpu}"
        );
    }
    for i in 0..2 {
        let aff = a.unit_property(&format!("web@{i}.service"), "CPUAffinity");
        println!("web@{i}: CPUAffinity={aff}");
        assert_eq!(aff, i.to_string(), "instance {i} is pinned to CPU {i}");
    }
}

#[test]
fn warm_steering_uses_one_instance_under_light_load() {
    let p = port(41);
    let Some(a) = Activator::start(
        "steer-warm-light",
        &[("web", &config(p, 4, "warm", "--idle-timeout 30s"))],
    ) else {
        return;
    };
    let answers: Vec<Hello> = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            get_hello(addr(p), Duration::from_secs(10)).unwrap()
        })
        .collect();
    let t = tally(&answers);
    println!("light load: {t:?}");
    assert_eq!(
        t.keys().cloned().collect::<Vec<_>>(),
        vec!["0".to_string()],
        "one warm instance served everything"
    );
    assert_eq!(a.instances("web@*").len(), 1, "{:?}", a.instances("web@*"));
}

#[test]
fn warm_steering_grows_under_heavy_load_and_shrinks_after() {
    let p = port(42);
    // 3 ms of CPU per request: one instance cannot keep up with 16 clients.
    let Some(a) = Activator::start(
        "steer-warm-heavy",
        &[(
            "web",
            &config(p, 4, "warm", "--idle-timeout 2s --work-us 3000"),
        )],
    ) else {
        return;
    };
    let answers = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(0u32));
    let deadline = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (answers, failures) = (answers.clone(), failures.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    match get_hello(addr(p), Duration::from_secs(10)) {
                        Ok(h) => answers.lock().unwrap().push(h),
                        Err(e) => {
                            eprintln!("{e:#}");
                            *failures.lock().unwrap() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let t = tally(&answers);
    println!(
        "heavy load: {} answers, {} failures: {t:?}",
        answers.len(),
        failures.lock().unwrap()
    );
    assert_eq!(*failures.lock().unwrap(), 0);
    assert!(
        t.len() >= 2,
        "the warm pool grew under load: {t:?}\n{}",
        a.log()
    );
    a.assert_logged("web: warm pool 1 → 2");
    // Calm again: the pool shrinks back and the extra instances exit on idle.
    a.assert_logged_within(Duration::from_secs(20), " → 1");
}
