//! A simulated power cut beneath the journal (like SQLite's crash-test VFS, in process).
//!
//! [`PowerModel`] implements the journal's test hook ([`Faults::on_io`]) and shadows
//! `journal/`: per file (by inode, so a renamed or removed file keeps its contents) the
//! **durable** bytes and the **pending** operations (writes, truncations) since its last fsync;
//! for the directory, the durable name → inode map and the entry operations (create, rename,
//! remove) since its last fsync. An fsync makes durable what was written before it *started*
//! ([`IoEvent::SyncStart`]) once it *returns* ([`IoEvent::SyncDone`]).
//!
//! At the cut (the Nth observed event, or [`PowerModel::cut_now`]) the model freezes and
//! computes what the disk would hold after losing power:
//! - the directory: the durable entries plus a random *prefix* of the entry operations since the
//!   last directory fsync (a journaling file system commits metadata in order; the empty prefix
//!   drops them all);
//! - each file: its durable bytes plus, per [`Mode`], some of its pending operations; a write
//!   may be **torn**: each 512-byte sector it touches is kept, lost, or garbled (random bytes).
//!   Only the write's own bytes of a sector change (powersafe overwrite, as SQLite assumes for
//!   modern disks): a later write never damages bytes that an earlier fsync made durable.
//!
//! Later events (the process goes on until the test shuts it down) are ignored. The model starts
//! when recovery is done (`recovery:replayed` step): it reads `journal/` back from disk as its
//! durable state (recovery syncs what it changes).
//!
//! For the oracles it also tracks, per segment fsync, how many operations the test had seen
//! acknowledged when that fsync started ([`PowerModel::durable_ops`]): those must survive.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use durq::journal::faults::{Faults, IoEvent};
use parking_lot::Mutex;

/// Sector size of the simulated disk.
pub const SECTOR: u64 = 512;

/// Which pending operations a cut keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Per file, a prefix of the pending operations, in order, the next one possibly torn
    /// (ordered write-back: what ext4 and most file systems do for appends).
    Ordered,
    /// Per file, any subset of the *sectors* the pending writes changed, each kept or lost
    /// independently: write-back that persists pages out of order (XFS size updates at I/O
    /// completion, overwrites of preallocated space, a torn multi-sector write). A lost sector
    /// reads as its durable bytes (zeros past the durable end), never as garbage.
    Reordered,
    /// Every pending operation and directory entry change is lost: the disk holds exactly what
    /// the fsyncs made durable.
    LoseAll,
}

#[derive(Clone, Debug)]
enum Pend {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

#[derive(Default, Debug)]
struct FileM {
    durable: Vec<u8>,
    pending: Vec<Pend>,
    /// Pending count and acknowledged-op count at each fsync start, oldest first.
    marks: VecDeque<(usize, u64)>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

#[derive(Default)]
struct Inner {
    active: bool,
    cut: bool,
    events: u64,
    cut_at: u64,
    files: HashMap<u64, FileM>,
    next_ino: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    dir_ops: Vec<DirOp>,
    dir_marks: VecDeque<usize>,
    acked: u64,
    durable_ops: u64,
    syncs_done: u64,
    image: Option<BTreeMap<String, Vec<u8>>>,
    log: Vec<String>,
}

/// The simulated disk beneath `journal/`.
pub struct PowerModel {
    /// Named steps seen, in order (for tests that wait for one).
    pub steps: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    /// A step at which the calling journal thread waits until the test releases it.
    gate: Mutex<Option<(String, std::sync::mpsc::Receiver<()>)>>,
    /// How long each fsync of a segment takes (a slow disk), 0 by default.
    pub sync_delay: Mutex<std::time::Duration>,
    dir: PathBuf,
    mode: Mode,
    rng: Mutex<fastrand::Rng>,
    inner: Mutex<Inner>,
}

fn apply(content: &mut Vec<u8>, op: &Pend) {
    match op {
        Pend::Write { offset, bytes } => {
            let end = *offset as usize + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(bytes);
        }
        Pend::Truncate(len) => content.resize(*len as usize, 0),
    }
}

/// Applies `op` torn: each sector it touches is kept, lost or (if `garble`) garbled.
fn apply_torn(content: &mut Vec<u8>, op: &Pend, garble: bool, rng: &mut fastrand::Rng) {
    let Pend::Write { offset, bytes } = op else {
        if rng.bool() {
            apply(content, op);
        }
        return;
    };
    let end = offset + bytes.len() as u64;
    let mut s = offset / SECTOR * SECTOR;
    while s < end {
        let a = s.max(*offset);
        let b = (s + SECTOR).min(end);
        let part = &bytes[(a - offset) as usize..(b - offset) as usize];
        match rng.u8(0..3) {
            0 => apply(
                content,
                &Pend::Write {
                    offset: a,
                    bytes: part.to_vec(),
                },
            ),
            1 if garble => {
                let garbage: Vec<u8> = (0..part.len()).map(|_| rng.u8(..)).collect();
                apply(
                    content,
                    &Pend::Write {
                        offset: a,
                        bytes: garbage,
                    },
                );
            }
            _ => {}
        }
        s += SECTOR;
    }
}

impl PowerModel {
    /// A model of `journal_dir`, cutting power at the `cut_at`-th observed event (0: only at
    /// [`PowerModel::cut_now`]).
    pub fn new(journal_dir: &Path, seed: u64, mode: Mode, cut_at: u64) -> PowerModel {
        PowerModel {
            steps: Mutex::new(None),
            gate: Mutex::new(None),
            sync_delay: Mutex::new(std::time::Duration::ZERO),
            dir: journal_dir.to_path_buf(),
            mode,
            rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0x5eed_cafe)),
            inner: Mutex::new(Inner {
                cut_at,
                ..Inner::default()
            }),
        }
    }

    fn name_of(&self, p: &Path) -> Option<String> {
        (p.parent() == Some(self.dir.as_path()))
            .then(|| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten()
    }

    /// Reads `journal/` from disk as the durable state.
    fn load(&self, st: &mut Inner) {
        for e in std::fs::read_dir(&self.dir).expect("list journal dir") {
            let e = e.unwrap();
            if !e.file_type().unwrap().is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let ino = st.next_ino;
            st.next_ino += 1;
            let durable = std::fs::read(e.path()).unwrap();
            st.files.insert(
                ino,
                FileM {
                    durable,
                    ..FileM::default()
                },
            );
            st.names.insert(name.clone(), ino);
            st.durable_names.insert(name, ino);
        }
        st.active = true;
    }

    /// Makes the next journal thread that reaches `step` wait until the returned sender sends
    /// (or is dropped; at most 30 s).
    pub fn gate(&self, step: &str) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.gate.lock() = Some((step.to_string(), rx));
        tx
    }

    /// Named steps, as they happen.
    pub fn watch_steps(&self) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.steps.lock() = Some(tx);
        rx
    }

    /// The test saw one more operation acknowledged.
    pub fn acked(&self) {
        self.inner.lock().acked += 1;
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        self.inner.lock().cut
    }

    /// Operations acknowledged before the start of the last completed segment fsync that
    /// happened before the cut: a recovered store must hold them all.
    pub fn durable_ops(&self) -> u64 {
        self.inner.lock().durable_ops
    }

    /// Number of completed fsyncs of segments before the cut.
    pub fn syncs_done(&self) -> u64 {
        self.inner.lock().syncs_done
    }

    /// Events observed (up to the cut).
    pub fn events(&self) -> u64 {
        self.inner.lock().events
    }

    /// A short description of the cut, for failure messages.
    pub fn describe(&self) -> String {
        let st = self.inner.lock();
        let tail: Vec<&String> = st.log.iter().rev().take(12).collect();
        format!(
            "mode {:?}, cut after {} events, durable_ops {}, acked {}, last events (newest first): {tail:?}",
            self.mode, st.events, st.durable_ops, st.acked
        )
    }

    /// Cuts the power now (if not yet cut).
    pub fn cut_now(&self) {
        let mut st = self.inner.lock();
        if !st.cut {
            self.cut(&mut st);
        }
    }

    fn cut(&self, st: &mut Inner) {
        st.cut = true;
        let mut rng = self.rng.lock();
        // Directory: durable entries plus a prefix of the entry operations since its last fsync.
        let mut names = st.durable_names.clone();
        let keep_ops = if self.mode == Mode::LoseAll {
            0
        } else {
            rng.usize(0..=st.dir_ops.len())
        };
        for op in &st.dir_ops[..keep_ops] {
            match op {
                DirOp::Create(n, ino) => {
                    names.insert(n.clone(), *ino);
                }
                DirOp::Rename(a, b) => {
                    if let Some(ino) = names.remove(a) {
                        names.insert(b.clone(), ino);
                    }
                }
                DirOp::Remove(n) => {
                    names.remove(n);
                }
            }
        }
        st.log.push(format!(
            "cut: kept {keep_ops} of {} directory ops",
            st.dir_ops.len()
        ));
        let mut image = BTreeMap::new();
        let mut notes = Vec::new();
        for (name, ino) in names {
            let f = &st.files[&ino];
            let mut content = f.durable.clone();
            match self.mode {
                Mode::Ordered => {
                    let n = rng.usize(0..=f.pending.len());
                    for op in &f.pending[..n] {
                        apply(&mut content, op);
                    }
                    if n < f.pending.len() && rng.bool() {
                        apply_torn(&mut content, &f.pending[n], true, &mut rng);
                        notes.push(format!(
                            "{name}: {n}/{} pending kept, next torn",
                            f.pending.len()
                        ));
                    } else {
                        notes.push(format!("{name}: {n}/{} pending kept", f.pending.len()));
                    }
                }
                Mode::LoseAll => {
                    notes.push(format!("{name}: {} pending lost", f.pending.len()));
                }
                Mode::Reordered => {
                    // The page cache holds the file as all pending operations left it and
                    // writes it back sector by sector in any order: each sector that differs
                    // from the durable one reaches the disk or not; the size is the new one or
                    // the durable one. A lost sector reads as its durable bytes (zeros past the
                    // durable end). Two writes to one sector are never split (the sector is
                    // written whole, holding both).
                    let mut full = content.clone();
                    for op in &f.pending {
                        apply(&mut full, op);
                    }
                    let durable_len = content.len();
                    content.resize(full.len(), 0);
                    let (mut kept, mut lost) = (0, 0);
                    for (i, sector) in full.chunks(SECTOR as usize).enumerate() {
                        let at = i * SECTOR as usize;
                        let old = &mut content[at..at + sector.len()];
                        if old != sector {
                            if rng.bool() {
                                old.copy_from_slice(sector);
                                kept += 1;
                            } else {
                                lost += 1;
                            }
                        }
                    }
                    if rng.u8(0..4) == 0 {
                        content.truncate(durable_len.min(full.len()));
                    }
                    notes.push(format!(
                        "{name}: {} pending, reordered by sector: {kept} kept, {lost} lost",
                        f.pending.len()
                    ));
                }
            }
            image.insert(name, content);
        }
        st.log.extend(notes);
        st.image = Some(image);
    }

    /// Names of the files in the post-power-loss image.
    pub fn image_names(&self) -> Vec<String> {
        self.cut_now();
        let st = self.inner.lock();
        st.image.as_ref().unwrap().keys().cloned().collect()
    }

    /// Writes the post-power-loss image of `journal/` into `to` (created).
    pub fn write_image(&self, to: &Path) {
        self.cut_now();
        std::fs::create_dir_all(to).unwrap();
        let st = self.inner.lock();
        for (name, bytes) in st.image.as_ref().unwrap() {
            std::fs::write(to.join(name), bytes).unwrap();
        }
    }

    fn event(&self, ev: &IoEvent<'_>) {
        let mut st = self.inner.lock();
        if st.cut || !st.active {
            return;
        }
        st.events += 1;
        if st.events == st.cut_at {
            st.log
                .push(format!("cut before {ev:?}").chars().take(160).collect());
            self.cut(&mut st);
            return;
        }
        let log: String = match ev {
            IoEvent::Wrote {
                file,
                offset,
                bytes,
            } => {
                format!("wrote {} @{offset}+{}", file.display(), bytes.len())
            }
            other => format!("{other:?}"),
        };
        st.log.push(log);
        if st.log.len() > 64 {
            st.log.drain(..32);
        }
        let st = &mut *st;
        match *ev {
            IoEvent::Wrote {
                file,
                offset,
                bytes,
            } => {
                if let Some(ino) = self.name_of(file).and_then(|n| st.names.get(&n).copied()) {
                    st.files.get_mut(&ino).unwrap().pending.push(Pend::Write {
                        offset,
                        bytes: bytes.to_vec(),
                    });
                }
            }
            IoEvent::Truncated { file, len } => {
                if let Some(ino) = self.name_of(file).and_then(|n| st.names.get(&n).copied()) {
                    st.files
                        .get_mut(&ino)
                        .unwrap()
                        .pending
                        .push(Pend::Truncate(len));
                }
            }
            IoEvent::SyncStart { path } => {
                if path == self.dir {
                    st.dir_marks.push_back(st.dir_ops.len());
                } else if let Some(ino) = self.name_of(path).and_then(|n| st.names.get(&n).copied())
                {
                    let acked = st.acked;
                    let f = st.files.get_mut(&ino).unwrap();
                    f.marks.push_back((f.pending.len(), acked));
                }
            }
            IoEvent::SyncDone { path } => {
                if path == self.dir {
                    let Some(mark) = st.dir_marks.pop_front() else {
                        return;
                    };
                    let done: Vec<DirOp> = st.dir_ops.drain(..mark).collect();
                    for m in st.dir_marks.iter_mut() {
                        *m -= mark;
                    }
                    for op in done {
                        match op {
                            DirOp::Create(n, ino) => {
                                st.durable_names.insert(n, ino);
                            }
                            DirOp::Rename(a, b) => {
                                if let Some(ino) = st.durable_names.remove(&a) {
                                    st.durable_names.insert(b, ino);
                                }
                            }
                            DirOp::Remove(n) => {
                                st.durable_names.remove(&n);
                            }
                        }
                    }
                } else if let Some(name) = self.name_of(path) {
                    let Some(ino) = st.names.get(&name).copied() else {
                        return;
                    };
                    let f = st.files.get_mut(&ino).unwrap();
                    let Some((mark, acked)) = f.marks.pop_front() else {
                        return;
                    };
                    let mark = mark.min(f.pending.len());
                    let done: Vec<Pend> = f.pending.drain(..mark).collect();
                    for m in f.marks.iter_mut() {
                        m.0 = m.0.saturating_sub(mark);
                    }
                    for op in &done {
                        apply(&mut f.durable, op);
                    }
                    if name.ends_with(".seg") {
                        st.durable_ops = st.durable_ops.max(acked);
                        st.syncs_done += 1;
                    }
                }
            }
            IoEvent::Created { file } => {
                if let Some(name) = self.name_of(file) {
                    let ino = st.next_ino;
                    st.next_ino += 1;
                    st.files.insert(ino, FileM::default());
                    st.names.insert(name.clone(), ino);
                    st.dir_ops.push(DirOp::Create(name, ino));
                }
            }
            IoEvent::Renamed { from, to } => {
                if let (Some(a), Some(b)) = (self.name_of(from), self.name_of(to)) {
                    if let Some(ino) = st.names.remove(&a) {
                        st.names.insert(b.clone(), ino);
                    }
                    st.dir_ops.push(DirOp::Rename(a, b));
                }
            }
            IoEvent::Removed { file } => {
                if let Some(name) = self.name_of(file) {
                    st.names.remove(&name);
                    st.dir_ops.push(DirOp::Remove(name));
                }
            }
        }
    }
}

impl Faults for PowerModel {
    fn on_step(&self, step: &str) {
        if let Some(tx) = &*self.steps.lock() {
            let _ = tx.send(step.to_string());
        }
        let gate = {
            let mut g = self.gate.lock();
            match &*g {
                Some((s, _)) if s == step => g.take(),
                _ => None,
            }
        };
        if let Some((_, rx)) = gate {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
        }
        if step == "recovery:replayed" {
            let mut st = self.inner.lock();
            if !st.active {
                self.load(&mut st);
            }
        }
    }
    fn on_io(&self, event: &IoEvent<'_>) {
        self.event(event);
        if let IoEvent::SyncStart { path } = event {
            let d = *self.sync_delay.lock();
            if !d.is_zero() && path.extension().is_some_and(|x| x == "seg") {
                std::thread::sleep(d);
            }
        }
    }
}
