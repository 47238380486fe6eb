//! System programs a test needs (chromium, chromedriver, redis-server). When one is missing the
//! test binary stops with one line naming the command that installs it (`scripts/test`), not a
//! panic and a backtrace note.

use std::io::Write as _;
use std::path::Path;

/// The path of the first of `names` found in the usual directories or on `PATH`; exits the test
/// process with one line on stderr when none is (naming the Debian `package`).
#[allow(dead_code)] // each test binary uses the helpers it needs
pub fn binary(names: &[&str], package: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"]
        .iter()
        .map(|d| Path::new(d).to_path_buf())
        .chain(std::env::split_paths(&path));
    for dir in dirs {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return p.display().to_string();
            }
        }
    }
    // Written to the real stderr: the test harness captures `eprintln!` and would drop it on exit.
    let _ = writeln!(
        std::io::stderr(),
        "error: {} not found: run `scripts/test` (it installs the {package} package), or `apt-get install -y {package}`",
        names[0]
    );
    std::process::exit(1);
}
