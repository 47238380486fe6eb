//! Which paths the watcher ignores: defaults, `--ignore` globs and `.gitignore` files.
//!
//! Invariants:
//! - Defaults: any `.git` component, vim swap and backup files (`.*.sw?`, `*~`, `4913`), emacs
//!   locks and autosaves (`.#*`, `#*#`), `*.tmp`.
//! - User globs match the path relative to its root and, for globs without a `/`, the file name.
//! - `.gitignore` files are matched with the `ignore` crate, deepest first (a deeper file
//!   overrides a shallower one, `!` re-includes); an ignored directory ignores all below it.
//! - [`Ignorer::reload`] re-reads one directory's `.gitignore`, so edits apply while running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use crate::error::{Error, Result};

/// Default name patterns.
pub const DEFAULT_IGNORES: &[&str] = &[".*.sw?", "*~", "4913", ".#*", "#*#", "*.tmp"];

/// The ignore rules of one watcher.
#[derive(Debug)]
pub struct Ignorer {
    roots: Vec<PathBuf>,
    names: GlobSet,
    rel: GlobSet,
    gitignores: HashMap<PathBuf, Gitignore>,
}

fn build(globs: &[String], what: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = Glob::new(g)
            .map_err(|e| Error::invalid(format!("{what} `{g}` is not a valid glob: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| Error::invalid(format!("{what}s cannot be compiled: {e}")))
}

impl Ignorer {
    /// Rules for `roots` with the user's `globs`.
    pub fn new(roots: &[PathBuf], globs: &[String]) -> Result<Ignorer> {
        let mut names: Vec<String> = DEFAULT_IGNORES.iter().map(|s| s.to_string()).collect();
        let mut rel = Vec::new();
        for g in globs {
            let g = g.trim_end_matches('/');
            if g.contains('/') {
                rel.push(g.trim_start_matches('/').to_string());
                rel.push(format!("{}/**", g.trim_start_matches('/')));
            } else {
                names.push(g.to_string());
            }
        }
        Ok(Ignorer {
            roots: roots.to_vec(),
            names: build(&names, "ignore pattern")?,
            rel: build(&rel, "ignore pattern")?,
            gitignores: HashMap::new(),
        })
    }

    /// (Re-)reads `dir/.gitignore`; forgets it if the file is gone.
    pub fn reload(&mut self, dir: &Path) {
        let file = dir.join(".gitignore");
        if !file.is_file() {
            self.gitignores.remove(dir);
            return;
        }
        let mut b = GitignoreBuilder::new(dir);
        if let Some(e) = b.add(&file) {
            tracing::warn!("{}: {e}", file.display());
        }
        match b.build() {
            Ok(g) => {
                self.gitignores.insert(dir.to_path_buf(), g);
            }
            Err(e) => tracing::warn!("{}: {e}", file.display()),
        }
    }

    fn root_of(&self, path: &Path) -> Option<&Path> {
        self.roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
            .map(|r| r.as_path())
    }

    /// True when `path` (absolute, below a root) is ignored. `is_dir` tells whether it is a
    /// directory (false when unknown).
    pub fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        let Some(root) = self.root_of(path) else {
            return true;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            return true;
        };
        for c in rel.components() {
            let c = c.as_os_str();
            if c == ".git" || self.names.is_match(Path::new(c)) {
                return true;
            }
        }
        if !self.rel.is_empty() && self.rel.is_match(rel) {
            return true;
        }
        if self.gitignores.is_empty() {
            return false;
        }
        // Deepest .gitignore first; the first one with an opinion decides.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if let Some(g) = self.gitignores.get(d) {
                match g.matched_path_or_any_parents(path, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            if d == root {
                break;
            }
            dir = d.parent();
        }
        false
    }
}
