//! `Steering=`: which instance gets which connection, on a real systemd.

use distribute_tests::{get_hello, port, tally, Activator, Hello};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(port: u16, n: u32, steering: &str, args: &str) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\nSteering={steering}\n\n[Service]\nExecStart=@BIN@/distribute-hello {args}\nDynamicUser=yes\n"
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
        let answers: Vec<Hello> = on_cpu(cpu, move || {
            (0..20)
                .map(|_| get_hello(addr(p), Duration::from_secs(10)).unwrap())
                .collect()
        });
        let t = tally(&answers);
        println!("client on CPU {cpu}: {t:?}");
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            vec![cpu.to_string()],
            "every connection from CPU {cpu} went to instance {cpu}"
        );
    }
    for i in 0..2 {
        let aff =
            a.sb.systemctl(&["show", "-p", "CPUAffinity", &format!("web@{i}.service")])
                .unwrap();
        println!("web@{i}: {}", aff.trim());
        assert_eq!(
            aff.trim(),
            format!("CPUAffinity={i}"),
            "instance {i} is pinned to CPU {i}"
        );
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
    assert!(a.log().contains("web: warm pool 1 → 2"), "{}", a.log());
    // Calm again: the pool shrinks back and the extra instances exit on idle.
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l.contains(" → 1")),
        "{}",
        a.log()
    );
}
