//! O1 and L5 step 3 against real listeners (`python3 -m http.server`, our own sockets) and real
//! processes: finding who holds a port, telling our orphan from anything else, killing orphans,
//! waiting for a port to be free.

mod process_support;

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatewarden::orphan::{
    classify_listener, kill_orphans, listeners_on_port, process_start_ticks, wait_port_free,
    Listener, ListenerKind,
};
use gatewarden::process::{
    read_owned_record, remove_owned_record, write_owned_record, OwnedRecord, RecordError,
};
use process_support::*;

/// `python3 -m http.server` on a free loopback port, and its listener once it is up.
async fn python_listener() -> (ChildGuard, u16, Listener) {
    let port = free_port();
    let child = ChildGuard(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    let mut found = Vec::new();
    eventually(SOON, "python3 listens", || {
        found = listeners_on_port(port).expect("/proc readable");
        !found.is_empty()
    })
    .await;
    let listener = found.remove(0);
    (child, port, listener)
}

#[actix_rt::test]
async fn o1_finds_listener_pid_and_program() {
    let (child, port, listener) = python_listener().await;
    assert_eq!(listener.pid, Some(child.pid()));
    let program = listener.program.clone().expect("comm readable");
    assert!(program.starts_with("python"), "{program}");
    let cmdline = listener.cmdline.clone().expect("cmdline readable");
    assert!(cmdline.contains("http.server"), "{cmdline}");
    assert!(cmdline.contains(&port.to_string()), "{cmdline}");
    assert_eq!(listener.start_ticks, process_start_ticks(child.pid()));
    assert!(listener.inode > 0);
    assert!(listener
        .to_string()
        .contains(&format!("pid {}", child.pid())));
    // A port nobody listens on has no listeners.
    let idle = free_port();
    assert_eq!(listeners_on_port(idle).expect("/proc readable"), Vec::new());
}

#[actix_rt::test]
async fn o1_finds_our_own_ipv4_and_ipv6_listeners() {
    let v4 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = v4.local_addr().expect("addr").port();
    // [::1] may be missing in some sandboxes; the IPv4 one must be found either way.
    let v6 = TcpListener::bind(("::1", port)).ok();
    let found = listeners_on_port(port).expect("/proc readable");
    let own = std::process::id();
    assert!(found
        .iter()
        .any(|listener| listener.pid == Some(own) && listener.address.is_ipv4()));
    if v6.is_some() {
        assert!(found
            .iter()
            .any(|listener| listener.pid == Some(own) && listener.address.is_ipv6()));
    }
}

#[actix_rt::test]
async fn o1_orphan_requires_matching_start_ticks() {
    let (child, port, listener) = python_listener().await;
    let start_ticks = process_start_ticks(child.pid()).expect("start ticks");
    let ours = OwnedRecord {
        pid: child.pid(),
        start_ticks,
        port: Some(port),
        program: "python3".to_owned(),
        pgid: None,
        supervisor_pid: None,
        supervisor_start_ticks: None,
    };
    assert_eq!(
        classify_listener(&listener, Some(&ours)),
        ListenerKind::OurOrphan
    );
    // Same pid, other start time: a reused pid, not ours.
    let reused = OwnedRecord {
        start_ticks: start_ticks + 1,
        ..ours.clone()
    };
    assert_eq!(
        classify_listener(&listener, Some(&reused)),
        ListenerKind::Unknown
    );
    let other_pid = OwnedRecord {
        pid: child.pid() + 1,
        ..ours.clone()
    };
    assert_eq!(
        classify_listener(&listener, Some(&other_pid)),
        ListenerKind::Unknown
    );
    assert_eq!(classify_listener(&listener, None), ListenerKind::Unknown);
    let unknown_holder = Listener {
        pid: None,
        start_ticks: None,
        ..listener.clone()
    };
    assert_eq!(
        classify_listener(&unknown_holder, Some(&ours)),
        ListenerKind::Unknown
    );
}

/// K1: the same listener, recorded with a supervisor that still runs (a live `sleep` stands in
/// for it): another supervisor's gateway, never our orphan. Once that supervisor is gone, it is.
#[actix_rt::test]
async fn k1_a_record_whose_supervisor_lives_is_never_acted_on() {
    let (child, port, listener) = python_listener().await;
    let start_ticks = process_start_ticks(child.pid()).expect("start ticks");
    let mut supervisor = ChildGuard(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep runs"),
    );
    let supervisor_pid = supervisor.pid();
    let record = OwnedRecord {
        pid: child.pid(),
        start_ticks,
        port: Some(port),
        program: "python3".to_owned(),
        pgid: Some(child.pid()),
        supervisor_pid: Some(supervisor_pid),
        supervisor_start_ticks: process_start_ticks(supervisor_pid),
    };
    assert!(record.supervisor_lives());
    assert_eq!(
        classify_listener(&listener, Some(&record)),
        ListenerKind::Unknown
    );
    // Same pid, another start time: a reused pid is not the supervisor.
    let reused = OwnedRecord {
        supervisor_start_ticks: record.supervisor_start_ticks.map(|ticks| ticks + 1),
        ..record.clone()
    };
    assert!(!reused.supervisor_lives());
    supervisor.0.kill().expect("kill the stand-in supervisor");
    supervisor.0.wait().expect("reap it");
    assert!(!record.supervisor_lives());
    assert_eq!(
        classify_listener(&listener, Some(&record)),
        ListenerKind::OurOrphan
    );
}

#[actix_rt::test]
async fn o1_kill_orphans_terms_then_kills() {
    // One dies of SIGTERM; the other ignores it and needs the SIGKILL.
    let mut polite = ChildGuard(
        Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep runs"),
    );
    let mut stubborn = ChildGuard(
        Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 1000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh runs"),
    );
    // Wait until the trap is installed, or SIGTERM could arrive first.
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stubborn.0.stdout.take().expect("piped")),
        &mut ready,
    )
    .expect("ready line");
    assert_eq!(ready.trim(), "ready");

    let started = Instant::now();
    let survivors = kill_orphans(&[polite.pid(), stubborn.pid()], 300, 5_000).await;
    assert_eq!(survivors, Vec::<u32>::new());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "SIGKILL only after the SIGTERM wait"
    );
    let polite_status = polite.0.wait().expect("reaped");
    let stubborn_status = stubborn.0.wait().expect("reaped");
    assert_eq!(polite_status.signal(), Some(15));
    assert_eq!(stubborn_status.signal(), Some(9));
}

#[actix_rt::test]
async fn o1_kill_orphans_never_signals_init_or_itself() {
    let own = std::process::id();
    let survivors = kill_orphans(&[0, 1, own], 10, 10).await;
    assert_eq!(survivors, vec![0, 1, own]);
}

#[actix_rt::test]
async fn l5_wait_port_free_reports_occupied_port() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let busy = wait_port_free(port, 20, 300)
        .await
        .expect_err("port is held");
    assert_eq!(busy.port, port);
    assert_eq!(busy.to_string(), format!("Port {port} still occupied"));
    assert!(busy
        .listeners
        .iter()
        .any(|listener| listener.pid == Some(std::process::id())));

    // Released during the wait: the wait ends well before its limit.
    let release = actix_rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    });
    let started = Instant::now();
    wait_port_free(port, 20, 20_000)
        .await
        .expect("port released");
    assert!(started.elapsed() < Duration::from_secs(20));
    release.await.expect("release task");
}

#[test]
fn o1_owned_record_round_trips_and_rejects_garbage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("gateway.pid.json");
    assert_eq!(read_owned_record(&path).expect("no record yet"), None);
    let record = OwnedRecord {
        pid: 4321,
        start_ticks: 987_654,
        port: Some(18789),
        program: "node".to_owned(),
        pgid: None,
        supervisor_pid: None,
        supervisor_start_ticks: None,
    };
    write_owned_record(&path, &record).expect("written");
    assert_eq!(read_owned_record(&path).expect("read"), Some(record));
    remove_owned_record(&path).expect("removed");
    remove_owned_record(&path).expect("removing twice is fine");

    std::fs::write(&path, "{not json").expect("garbage written");
    assert!(matches!(
        read_owned_record(&path),
        Err(RecordError::Invalid { .. })
    ));
}

/// A `sleep 300` in process group `group` (0: a group of its own), with the K4 state-directory
/// marker in its environment when `marker` is given.
fn group_member(group: i32, marker: Option<&std::path::Path>) -> ChildGuard {
    use std::os::unix::process::CommandExt as _;
    let mut sleep = Command::new("sleep");
    sleep
        .arg("300")
        .stdin(Stdio::null())
        .env_remove(gatewarden::process::STATE_MARKER_ENV)
        .process_group(group);
    if let Some(state_dir) = marker {
        sleep.env(gatewarden::process::STATE_MARKER_ENV, state_dir);
    }
    ChildGuard(sleep.spawn().expect("sleep runs"))
}

/// K4 (and K1 for the cleanup): of the recorded gateway's process group, only members that carry
/// this state directory's marker *and* started no earlier than the recorded gateway are ended;
/// an older marked member (a reused group id), an unmarked one and the leader are left alone and
/// reported. While the record's supervisor lives, nothing at all is touched.
#[test]
fn k4_only_marked_members_started_after_the_gateway_are_ended() {
    use gatewarden::orphan::process_is_running;
    use gatewarden::process::end_leftovers;
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path();
    let leader = group_member(0, Some(state_dir));
    let group = leader.pid() as i32;
    let older_marked = group_member(group, Some(state_dir));
    let unmarked = group_member(group, None);
    // Start times count in clock ticks (10 ms): the next member must start a tick later.
    let older_ticks = process_start_ticks(older_marked.pid()).expect("ticks");
    let mut newer_marked = group_member(group, Some(state_dir));
    while process_start_ticks(newer_marked.pid()).expect("ticks") <= older_ticks {
        drop(newer_marked);
        std::thread::sleep(Duration::from_millis(20));
        newer_marked = group_member(group, Some(state_dir));
    }
    let gateway_ticks = process_start_ticks(newer_marked.pid()).expect("ticks");
    let stand_in_supervisor = group_member(0, None);
    let record = OwnedRecord {
        pid: leader.pid(),
        // The recorded gateway started with the newest member: every other one is older.
        start_ticks: gateway_ticks,
        port: None,
        program: "sleep".to_owned(),
        pgid: Some(leader.pid()),
        supervisor_pid: Some(stand_in_supervisor.pid()),
        supervisor_start_ticks: process_start_ticks(stand_in_supervisor.pid()),
    };
    let record_path = gatewarden::process::owned_record_path(state_dir);
    write_owned_record(&record_path, &record).expect("record written");

    // K1: the record's supervisor lives: nothing examined, nothing signalled, record kept.
    let report = end_leftovers(state_dir);
    assert!(report.supervisor_alive, "{report:?}");
    assert!(report.ended.is_empty() && report.left_alone.is_empty());
    for member in [&leader, &older_marked, &unmarked, &newer_marked] {
        assert!(process_is_running(member.pid()));
    }
    assert!(read_owned_record(&record_path).expect("read").is_some());

    // The supervisor died: only the marked member started after the gateway is ended.
    drop(stand_in_supervisor);
    let report = end_leftovers(state_dir);
    assert_eq!(report.ended, vec![newer_marked.pid()], "{report:?}");
    assert!(report.survivors.is_empty(), "{report:?}");
    let mut left_alone = report.left_alone.clone();
    left_alone.sort_unstable();
    let mut expected = vec![leader.pid(), older_marked.pid(), unmarked.pid()];
    expected.sort_unstable();
    assert_eq!(left_alone, expected, "{report:?}");
    assert!(!process_is_running(newer_marked.pid()));
    for member in [&leader, &older_marked, &unmarked] {
        assert!(
            process_is_running(member.pid()),
            "{} was signalled",
            member.pid()
        );
    }
    assert!(
        read_owned_record(&record_path).expect("read").is_none(),
        "the stale record is removed"
    );
}
