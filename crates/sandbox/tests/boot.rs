//! The harness itself: boots, runs a transient unit, keeps the host's /tmp, cleans up.

use distribute_sandbox::{boot_for_test, Systemd};
use std::time::{Duration, Instant};

#[test]
fn boots_runs_a_unit_and_cleans_up() {
    let marker =
        std::env::temp_dir().join(format!("distribute-sandbox-marker-{}", std::process::id()));
    std::fs::write(&marker, "host /tmp must survive the sandbox").unwrap();
    let Some(sb) = boot_for_test("harness-boot", &[]) else {
        return;
    };
    let pid1 = sb.pid1();
    // The systemd asked for is the one running.
    match sb.systemd() {
        Systemd::Host => assert!(sb.systemd_version() >= 249, "{}", sb.systemd_version()),
        Systemd::Debian13 => assert!(sb.systemd_version() >= 257, "{}", sb.systemd_version()),
    }
    let os = sb.run("cat", &["/etc/os-release"]).unwrap();
    eprintln!(
        "booted {} systemd {}: {}",
        sb.systemd(),
        sb.systemd_version(),
        os.lines().next().unwrap_or("")
    );
    if sb.systemd() == Systemd::Debian13 {
        assert!(os.contains("trixie"), "{os}");
        // The root is writable, and writes land in this sandbox's overlay,
        // never in the cached root.
        sb.run("touch", &["/etc/distribute-probe"]).unwrap();
        assert!(sb.root_host_path("/etc/distribute-probe").exists());
        let cached = distribute_sandbox::debian::debian13_root().unwrap();
        assert!(!cached.join("etc/distribute-probe").exists());
        assert!(sb.dir().join("overlay/upper/etc/distribute-probe").exists());
    }
    // /tmp inside is a fresh tmpfs: the host marker is not visible there.
    assert!(!sb.host_path(marker.to_str().unwrap()).exists());
    // The harness directory is visible inside, wherever the checkout lives.
    let inner = sb.write_file("probe.txt", "visible").unwrap();
    assert_eq!(sb.run("cat", &[&inner]).unwrap(), "visible");
    sb.run(
        "systemd-run",
        &[
            "--unit=probe",
            "-p",
            "CollectMode=inactive-or-failed",
            "-p",
            "DynamicUser=yes",
            "/bin/sh",
            "-c",
            "echo hello-from-probe",
        ],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j = sb.journal(Some("probe.service"));
        if j.contains("hello-from-probe") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probe output not in the sandbox journal:\n{j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cgroup_dirs: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/unified")
        .or_else(|_| std::fs::read_dir("/sys/fs/cgroup"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("harness-boot"))
        .collect();
    assert_eq!(cgroup_dirs.len(), 1);
    let dir = sb.dir().to_path_buf();
    sb.shutdown().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid1}")).exists(),
        "sandbox PID 1 still alive"
    );
    assert!(!cgroup_dirs[0].path().exists(), "cgroup left behind");
    assert!(!dir.join("overlay").exists(), "overlay layer left behind");
    assert!(marker.exists(), "the host's /tmp was touched");
    std::fs::remove_file(marker).unwrap();
}
