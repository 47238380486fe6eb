//! `durq check [--repair]` through the binary: clean → 0, damage → 1, repaired → 0.

mod support;

use support::*;

#[test]
fn check_reports_and_repairs_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..20 {
        ok(&run(
            d,
            &[
                "enqueue",
                "q",
                &format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}"),
            ],
        ));
    }
    let o = run(d, &["check"]);
    assert!(
        ok(&o).contains("no problems"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let j = ok(&run(d, &["--json", "check"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["clean"], true);

    // Flip a byte in the middle of the first segment: corruption before the tail.
    let seg = std::fs::read_dir(d.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let o = run(d, &["check"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(d, &["check", "--repair"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let s = stats(d);
    let n = s["queues"]["q"]["waiting"].as_u64().unwrap();
    assert!((18..=20).contains(&n), "intact records survive: {s}");
    assert_eq!(
        run(dir.path().join("nope").as_path(), &["check"])
            .status
            .code(),
        Some(2)
    );
}
