//! Giving back the code and constant pages only start-up used.
//!
//! Start-up (configuration, recovery, the runtime, TLS and JWT set-up) runs code and reads
//! constants of the executable and its shared libraries that a running server never touches
//! again, and the kernel maps file pages in 64 KiB windows around each one it faults in: at
//! 1,000 subscribers about 1.2 MiB of the server's resident memory was such pages (libc's as
//! much as its own). Once the server is ready, [`release_startup_pages`] unmaps the read-only
//! pages of the executable and its libraries (they stay in the page cache), and the kernel
//! maps back, on first touch, what the server then runs. Only pages that are byte for byte
//! the file's are dropped: a mapping with any page the process wrote (relocated data, a
//! debugger's breakpoint) is left alone. Elsewhere than Linux nothing is released.

/// What [`release_startup_pages`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Read-only file mappings released.
    pub mappings: usize,
    /// Their resident KiB before.
    pub resident_kib: u64,
}

/// Unmaps the resident pages of every read-only, never-written mapping of the executable or a
/// shared library in this process, unless a debugger is attached (its breakpoints live in
/// written copies of code pages; those mappings would be skipped anyway, this keeps a
/// tracer's view stable).
// Never inlined: `bench/hot_functions.py` needs the symbol, where it tells start-up's functions
// from a ready server's.
#[inline(never)]
pub fn release_startup_pages() -> std::io::Result<Released> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    if traced(&status) {
        return Ok(Released::default());
    }
    // Read a line at a time: the whole text is about 100 KB, which would stay with the
    // allocator for a while after the pages it frees.
    let smaps = std::io::BufReader::with_capacity(4096, std::fs::File::open("/proc/self/smaps")?);
    let exe = std::env::current_exe()?;
    let mut done = Released::default();
    for m in clean_file_mappings(smaps, &exe.to_string_lossy())? {
        if drop_pages(&m) {
            done.mappings += 1;
            done.resident_kib += m.rss_kib;
        }
    }
    Ok(done)
}

/// Drops the page-table entries of `m`, one of [`clean_file_mappings`]'s.
#[cfg(target_os = "linux")]
fn drop_pages(m: &Mapping) -> bool {
    // SAFETY: the range is a whole private mapping of a file, mapped without write permission,
    // with no anonymous (copied-on-write) page: every page holds exactly the file's bytes.
    // MADV_DONTNEED on such a mapping only drops page-table entries; the next access faults
    // the same bytes back from the page cache (as after reclaim, which the kernel may do to
    // these pages at any time), so no value the program can observe changes. The mappings are
    // the executable's and its shared libraries', which stay mapped for the life of the
    // process (nothing in it unloads a library), so no other mapping can have taken the range
    // since `smaps` was read.
    unsafe {
        rustix::mm::madvise(
            m.start as *mut std::ffi::c_void,
            m.end - m.start,
            rustix::mm::Advice::LinuxDontNeed,
        )
    }
    .is_ok()
}

/// Without `/proc` no mapping is found, and there is nothing to drop.
#[cfg(not(target_os = "linux"))]
fn drop_pages(_: &Mapping) -> bool {
    false
}

/// What follows the first `n` whitespace-separated fields of `line` (a path may hold spaces).
fn after_fields(line: &str, n: usize) -> &str {
    let mut rest = line;
    for _ in 0..n {
        rest = rest.trim_start();
        rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
    }
    rest.trim()
}

fn is_shared_object(path: &str) -> bool {
    path.starts_with('/') && (path.ends_with(".so") || path.contains(".so."))
}

fn traced(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .is_some_and(|pid| pid.trim() != "0")
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// The mappings of `/proc/self/smaps` of the executable `exe` or a shared library that are
/// private, without write permission, and hold no anonymous page.
fn clean_file_mappings(
    mut smaps: impl std::io::BufRead,
    exe: &str,
) -> std::io::Result<Vec<Mapping>> {
    struct Entry {
        mapping: Mapping,
        eligible: bool,
        anonymous: Option<u64>,
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if smaps.read_line(&mut line)? == 0 {
            break;
        }
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            // `start-end perms offset dev inode [path]`
            let perms = fields.next().unwrap_or("");
            let path = after_fields(&line, 5);
            let eligible = matches!(perms.as_bytes(), [b'r', b'-', _, b'p'])
                && (path == exe || is_shared_object(path));
            entries.push(Entry {
                mapping: Mapping {
                    start,
                    end,
                    rss_kib: 0,
                },
                eligible,
                anonymous: None,
            });
            continue;
        }
        let (Some(entry), Some(kib)) = (entries.last_mut(), fields.next()) else {
            continue;
        };
        match first {
            "Rss:" => entry.mapping.rss_kib = kib.parse().unwrap_or(0),
            "Anonymous:" => entry.anonymous = kib.parse().ok(),
            _ => {}
        }
    }
    Ok(entries
        .into_iter()
        // A mapping whose anonymous count is unknown is treated as written.
        .filter(|e| e.eligible && e.anonymous == Some(0) && e.mapping.end > e.mapping.start)
        .map(|e| e.mapping)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c01aa000 r--p 00000000 08:01 123 /usr/bin/riffle
Size:               1704 kB
Rss:                 816 kB
Anonymous:             0 kB
55d0c01aa000-55d0c08a7000 r-xp 001a9000 08:01 123 /usr/bin/riffle
Rss:                1012 kB
Anonymous:             0 kB
55d0c08a7000-55d0c08d6000 r--p 008a5000 08:01 123 /usr/bin/riffle
Rss:                 188 kB
Anonymous:           180 kB
55d0c08d6000-55d0c08f1000 rw-p 008d3000 08:01 123 /usr/bin/riffle
Rss:                  36 kB
Anonymous:            36 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             4 kB
7f71e0fd4000-7f71e112a000 r-xp 00026000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1100 kB
Anonymous:             0 kB
7f71e1200000-7f71e1201000 r-xp 00000000 08:01 78 /opt/has space/lib.so
Rss:                   4 kB
7f71e1300000-7f71e1301000 r-xp 00000000 08:01 79 /opt/has space/libz.so.1
Rss:                   4 kB
Anonymous:             0 kB
7ffdae8d7000-7ffdae8f8000 rw-p 00000000 00:00 0                          [stack]
Rss:                  32 kB
Anonymous:            32 kB
7f4c6dc53000-7f4c6dc55000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f4c6dd00000-7f4c6dd01000 r--s 00000000 08:01 90 /dev/shm/shared
Rss:                   4 kB
Anonymous:             0 kB
7f4c6de00000-7f4c6de10000 r--p 00000000 08:01 91 /var/lib/riffle/data.bin
Rss:                  64 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unwritten_private_read_only_file_mappings_are_released() {
        let got = clean_file_mappings(SMAPS.as_bytes(), "/usr/bin/riffle").expect("in memory");
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0c0000000,
                    end: 0x55d0c01aa000,
                    rss_kib: 816
                },
                Mapping {
                    start: 0x55d0c01aa000,
                    end: 0x55d0c08a7000,
                    rss_kib: 1012
                },
                Mapping {
                    start: 0x7f71e0fd4000,
                    end: 0x7f71e112a000,
                    rss_kib: 1100
                },
                Mapping {
                    start: 0x7f71e1300000,
                    end: 0x7f71e1301000,
                    rss_kib: 4
                },
            ],
            "relocated data, writable, anonymous, [vdso], shared, data-file and unknown-anonymous mappings stay"
        );
    }

    #[test]
    fn a_traced_process_keeps_its_pages() {
        assert!(traced("Name:\triffle\nTracerPid:\t4242\n"));
        assert!(!traced("Name:\triffle\nTracerPid:\t0\n"));
        assert!(!traced("Name:\triffle\n"));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn released_code_runs_and_constants_read_back_the_same() {
        static TABLE: [u64; 4] = [3, 1, 4, 1];
        let before = TABLE.iter().sum::<u64>();
        let done = release_startup_pages().expect("read /proc/self");
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self");
        if traced(&status) {
            assert_eq!(
                done,
                Released::default(),
                "a traced process keeps its pages"
            );
        } else {
            assert!(
                done.mappings > 0,
                "the test executable has read-only mappings"
            );
        }
        // Code and constants fault back in from the file, unchanged.
        assert_eq!(std::hint::black_box(&TABLE).iter().sum::<u64>(), before);
        assert_eq!(format!("{:?}", vec![1, 2]), "[1, 2]");
    }
}
