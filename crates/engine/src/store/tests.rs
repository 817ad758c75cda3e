use super::*;
use riffle_wal::MemDir;

fn cache() -> Arc<FileCache> {
    Arc::new(FileCache::new(Arc::new(MemDir::new()), 16))
}

/// Log 7 with records "alpha", "beta", "gamma" at 0..5, 5..9, 9..14.
fn three_records(cache: &Arc<FileCache>) -> LogFiles {
    let f = LogFiles::open(cache, 7, 0).expect("open");
    f.write_records(0, 0, b"alphabeta", &[5, 9]).expect("write");
    f.write_record(2, 9, b"gamma").expect("write");
    f
}

fn flip(cache: &FileCache, path: &str, at: u64) {
    let file = cache.dir().open(path, false).expect("open");
    let mut b = [0u8; 1];
    file.read_at(&mut b, at).expect("read");
    file.write_all_at(&[b[0] ^ 0x10], at).expect("write");
}

fn damaged(r: io::Result<impl Sized>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidData)
}

#[test]
fn recovered_bytes_are_checked_before_they_are_served() {
    let c = cache();
    three_records(&c);
    let f = LogFiles::existing(&c, 7, 0, 14);
    assert_eq!(&f.read_bytes(0, 14).expect("read")[..], b"alphabetagamma");
    assert_eq!(f.range(5, 9).expect("range").len, 4);
    // Damage after start: a byte of "gamma" (never checked yet), then of "alpha" (checked).
    let c2 = cache();
    three_records(&c2);
    flip(&c2, &data_path(7), 11);
    let f = LogFiles::existing(&c2, 7, 0, 14);
    assert!(f.read_bytes(0, 9).is_ok());
    assert!(damaged(f.read_bytes(9, 14)));
    assert!(damaged(f.range(0, 14)));
    assert!(damaged(f.record_containing(3, 10)));
    // Failing twice: a damaged range is never remembered as checked.
    assert!(damaged(f.range(9, 14)));
    assert_eq!(c2.stats().damaged_reads, 4);
    assert_eq!(c.stats().damaged_reads, 0);
}

#[test]
fn a_damaged_index_entry_fails_too() {
    let c = cache();
    three_records(&c);
    // The end of record 1 ("beta"): 9 becomes 25, past "gamma".
    flip(&c, &idx_path(7), entry_at(1));
    let f = LogFiles::existing(&c, 7, 0, 14);
    assert!(damaged(f.range(0, 14)));
    let c = cache();
    three_records(&c);
    // A high byte of record 2's end: an end far past the data is refused before anything
    // is allocated for it.
    let c2 = cache();
    three_records(&c2);
    flip(&c2, &idx_path(7), entry_at(2) + 6);
    let f = LogFiles::existing(&c2, 7, 0, 14);
    assert!(damaged(f.range(9, 14)));
    assert!(f.range(0, 9).is_ok());
    // The checksum of record 0.
    flip(&c, &idx_path(7), entry_at(0) + 9);
    let f = LogFiles::existing(&c, 7, 0, 14);
    assert!(damaged(f.read_bytes(0, 5)));
    assert!(f.read_bytes(5, 14).is_ok());
}

#[test]
fn what_this_process_wrote_is_served_without_a_check() {
    let c = cache();
    let f = three_records(&c);
    // Damage behind the process's back is not looked for in what it wrote itself.
    flip(&c, &data_path(7), 1);
    assert!(f.read_bytes(0, 14).is_ok());
    // Recovered, the same files are checked.
    assert!(damaged(f.clone().recovered(14).read_bytes(0, 14)));
}

#[test]
fn index_only_records_have_nothing_to_check() {
    let c = cache();
    let f = LogFiles::open(&c, 3, 0).expect("open");
    f.write_record(0, 0, b"abcd").expect("write");
    // Two records whose bytes were never stored (an `ephemeral` stretch), then one that was.
    f.write_records(1, 10, &[], &[10, 10]).expect("write");
    f.write_record(3, 10, b"xyz").expect("write");
    let f = LogFiles::existing(&c, 3, 0, 13);
    assert_eq!(f.ends(0, 4).expect("ends"), vec![4, 10, 10, 13]);
    assert!(f.range(0, 13).is_ok());
}

#[test]
fn an_index_of_the_layout_before_checksums_is_rewritten_on_open() {
    let c = cache();
    let data = c.dir().open(&data_path(9), true).expect("create");
    data.write_all_at(b"onetwothree", 0).expect("write");
    let old = c.dir().open(&idx_path(9), true).expect("create");
    let ends: Vec<u8> = [103u64, 106, 111]
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    old.write_all_at(&ends, 0).expect("write");
    drop((data, old));
    // Refused where only the current layout may be (a damaged header, not an old index).
    assert!(damaged(LogFiles::open(&c, 9, 100)));
    // A header whose page was lost (zeros) is written again.
    let lost = c.dir().open(&idx_path(10), true).expect("create");
    lost.write_all_at(&[0; 40], 0).expect("write");
    drop(lost);
    LogFiles::open(&c, 10, 0).expect("open");
    assert_eq!(c.dir().size(&idx_path(10)).expect("size"), Some(40));
    c.set_old_layouts(true);
    // A fork's files: data from position 100.
    let f = LogFiles::open(&c, 9, 100).expect("open").recovered(111);
    assert_eq!(c.dir().size(&idx_path(9)).expect("size"), Some(idx_len(3)));
    assert_eq!(f.ends(0, 3).expect("ends"), vec![103, 106, 111]);
    assert_eq!(&f.read_bytes(100, 111).expect("read")[..], b"onetwothree");
    // Opening again changes nothing.
    LogFiles::open(&c, 9, 100).expect("reopen");
    assert_eq!(c.dir().size(&idx_path(9)).expect("size"), Some(idx_len(3)));
    assert!(!c.dir().exists(&format!("{}.new", idx_path(9))));
}

#[test]
fn released_index_blocks_keep_the_header() {
    let c = cache();
    let f = LogFiles::open(&c, 5, 0).expect("open");
    let data = vec![7u8; 1000];
    let ends: Vec<u64> = (1..=1000).collect();
    f.write_records(0, 0, &data, &ends).expect("write");
    // Entries of records 0..255 fill the first block after the header.
    let (data_to, rec_to) = f.release(0, 900, 0, 900).expect("release");
    assert_eq!(data_to, 0); // under one data block
    assert_eq!(rec_to, 4096 * 3 / 16 - 1);
    let idx = c.dir().open(&idx_path(5), false).expect("open");
    let mut head = [0u8; 8];
    idx.read_at(&mut head, 0).expect("read");
    assert_eq!(&head, MAGIC);
    assert_eq!(
        f.ends(rec_to, 2).expect("ends"),
        vec![rec_to + 1, rec_to + 2]
    );
}

#[test]
fn an_old_index_with_a_released_head_is_rewritten_without_reading_the_hole() {
    let c = cache();
    c.set_old_layouts(true);
    // A topic whose first two records (0..4, 4..8) were released: their entries and bytes
    // are zeros now; records 8..12 and 12..16 are live.
    let data = c.dir().open(&data_path(4), true).expect("create");
    data.write_all_at(b"\0\0\0\0\0\0\0\0liveLIVE", 0)
        .expect("write");
    let old = c.dir().open(&idx_path(4), true).expect("create");
    let ends: Vec<u8> = [0u64, 0, 12, 16]
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    old.write_all_at(&ends, 0).expect("write");
    drop((data, old));
    let f = LogFiles::open(&c, 4, 0).expect("open").recovered(16);
    // The first live record's start is gone with its predecessor's entry: it is served from
    // where the read starts, unchecked; the next one is checked.
    assert_eq!(&f.read_bytes(8, 16).expect("read")[..], b"liveLIVE");
    flip(&c, &data_path(4), 13);
    c.checked.forget(4); // as after a restart
    let f = LogFiles::existing(&c, 4, 0, 16);
    assert!(damaged(f.read_bytes(8, 16)));
}

#[test]
fn a_release_keeps_the_entry_saying_where_the_head_starts() {
    let c = cache();
    let f = LogFiles::open(&c, 6, 0).expect("open");
    let data = vec![5u8; 300];
    let ends: Vec<u64> = (1..=300).collect();
    f.write_records(0, 0, &data, &ends).expect("write");
    // Entry 255 starts the second block: releasing up to record 255 must keep entry 254
    // (where record 255 starts), the first block's last, so it gives back nothing yet.
    assert_eq!(f.release(0, 255, 0, 255).expect("release").1, 0);
    assert_eq!(f.ends(254, 1).expect("ends"), vec![255]);
    // Entry 256 would start the second block: releasing up to record 256 gives back the
    // first block but not entry 255 (the start of record 256), the second block's first.
    let (_, rec_to) = f.release(0, 256, 0, 256).expect("release");
    assert_eq!(rec_to, 255);
    let (_, rec_to) = f.release(0, 257, rec_to, 257).expect("release");
    assert_eq!(rec_to, 255);
    let f = LogFiles::existing(&c, 6, 0, 300);
    assert_eq!(f.ends(255, 2).expect("ends"), vec![256, 257]);
    assert!(f.read_bytes(256, 300).is_ok());
}

#[test]
fn long_records_are_checked_in_pieces() {
    let c = cache();
    let f = LogFiles::open(&c, 8, 0).expect("open");
    let big = vec![9u8; (PIECE * 2 + 5) as usize];
    f.write_record(0, 0, &big).expect("write");
    f.write_record(1, big.len() as u64, b"tail").expect("write");
    let end = big.len() as u64 + 4;
    assert!(LogFiles::existing(&c, 8, 0, end).range(0, end).is_ok());
    flip(&c, &data_path(8), PIECE + 3);
    c.checked.forget(8); // as after a restart
    assert!(damaged(LogFiles::existing(&c, 8, 0, end).range(0, end)));
}
