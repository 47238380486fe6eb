//! The ignore rules and the settle primitives on their own (real files, no watcher).

use std::path::PathBuf;

use durq::watch::hash::{hash_file, hex};
use durq::watch::ignore::Ignorer;
use durq::watch::record::{Meta, Record, RACY_NS};

fn root() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let r = std::fs::canonicalize(t.path()).unwrap();
    (t, r)
}

#[test]
fn default_and_user_ignores() {
    let (_t, r) = root();
    let ign = Ignorer::new(
        std::slice::from_ref(&r),
        &["*.log".into(), "out/gen".into()],
    )
    .unwrap();
    for p in [
        ".git/config",
        "a/.git/x",
        ".f.swp",
        ".f.swx",
        "f~",
        "4913",
        ".#f",
        "#f#",
        "x.tmp",
        "a.log",
        "out/gen/x",
        "out/gen",
    ] {
        assert!(ign.is_ignored(&r.join(p), false), "{p} should be ignored");
    }
    for p in ["a.txt", "out/other", "gitx", "f.swp.txt", "log"] {
        assert!(
            !ign.is_ignored(&r.join(p), false),
            "{p} should not be ignored"
        );
    }
    assert!(
        ign.is_ignored(std::path::Path::new("/elsewhere/a"), false),
        "outside every root"
    );
    assert!(Ignorer::new(&[r], &["[".into()])
        .unwrap_err()
        .is_invalid_input());
}

#[test]
fn gitignore_deeper_files_override_and_reload() {
    let (_t, r) = root();
    std::fs::create_dir_all(r.join("sub")).unwrap();
    std::fs::write(r.join(".gitignore"), "*.bak\nbuild/\n").unwrap();
    std::fs::write(r.join("sub/.gitignore"), "!keep.bak\n").unwrap();
    let mut ign = Ignorer::new(std::slice::from_ref(&r), &[]).unwrap();
    ign.reload(&r);
    ign.reload(&r.join("sub"));
    assert!(ign.is_ignored(&r.join("a.bak"), false));
    assert!(ign.is_ignored(&r.join("sub/b.bak"), false));
    assert!(!ign.is_ignored(&r.join("sub/keep.bak"), false));
    assert!(
        ign.is_ignored(&r.join("build/x/y.c"), false),
        "under an ignored directory"
    );
    assert!(!ign.is_ignored(&r.join("a.c"), false));
    std::fs::remove_file(r.join(".gitignore")).unwrap();
    ign.reload(&r);
    assert!(!ign.is_ignored(&r.join("a.bak"), false));
}

#[test]
fn streamed_hash_matches_in_memory_and_records_distrust_racy_mtimes() {
    use sha2::Digest;
    let (_t, r) = root();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let p = r.join("f");
    std::fs::write(&p, &data).unwrap();
    let (sha, n) = hash_file(&p).unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(hex(&sha), hex(&sha2::Sha256::digest(&data).into()));
    let meta = Meta::of(&std::fs::symlink_metadata(&p).unwrap());
    let changed = meta.mtime_ns.max(meta.ctime_ns);
    let fresh = Record {
        meta,
        sha,
        taken_ns: changed + 1_000,
        gen: 1,
    };
    assert!(
        !fresh.trusts(&meta),
        "an mtime this close to the record's time is racy"
    );
    let old = Record {
        taken_ns: changed + RACY_NS + 1,
        ..fresh.clone()
    };
    assert!(old.trusts(&meta));
    let mut touched = meta;
    touched.mtime_ns += 1;
    assert!(!old.trusts(&touched));
}
