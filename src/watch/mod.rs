//! The file watcher (issue 3): debounced, content-hashed changes turned into `file_event` jobs.
