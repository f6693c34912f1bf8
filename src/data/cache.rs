//! The prepared-image cache: one file per (data set, size, fit mode), memory-mapped.
//!
//! File layout:
//! - bytes 0..8: magic `GANCACH1`;
//! - 8..16, 16..24: offset and length (u64 LE) of the JSON trailer;
//! - 24..64: zero;
//! - 64..: `count` images of 3*S*S planar RGB bytes;
//! - the JSON trailer (`CacheTrailer`): the key it was built for and which catalogue items
//!   decoded.
//!
//! The trailer goes last so images can be streamed to disk while decoding. The file is written
//! under a temporary name, synced and renamed into place, so a crash never leaves a
//! half-written file under the real name; a file whose key, size or layout does not check out
//! is rebuilt. The key covers the catalogue fingerprint (captions file bytes, image paths,
//! sizes and mtimes), size, fit mode and the preparation recipe.

use super::catalogue::{Catalogue, SkipReason};
use super::image::{load_planar, Fit, RESIZE_FILTER};
use crate::hash::Fnv64;
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"GANCACH1";
pub const PIXELS_OFFSET: usize = 64;

/// The bytes before the images, as the file holds them (integers little-endian).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Header {
    magic: [u8; 8],
    trailer_offset: u64,
    trailer_len: u64,
    zero: [u64; 5],
}
const _: () = assert!(std::mem::size_of::<Header>() == PIXELS_OFFSET);

/// Bump when the way images are prepared changes, so old caches are rebuilt (3: a JPEG that
/// ends before its end marker is unreadable, where it was filled with grey).
const RECIPE_VERSION: u64 = 3;
/// Images decoded in parallel before being appended to the file: bounds memory use.
const CHUNK: usize = 128;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheTrailer {
    /// Hex of `cache_key`.
    pub key: String,
    pub size: usize,
    pub fit: String,
    /// Index into the catalogue's items of each stored image, in storage order.
    pub items: Vec<u32>,
    /// Images that did not decode: (path, reason).
    pub unreadable: Vec<(String, String)>,
}

pub struct Cache {
    pub path: PathBuf,
    pub trailer: CacheTrailer,
    map: Mmap,
    image_bytes: usize,
    /// Whether this call built the file (false: an existing one was valid).
    pub built: bool,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.trailer.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Planar CHW bytes of stored image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let start = PIXELS_OFFSET + i * self.image_bytes;
        &self.map[start..start + self.image_bytes]
    }

    /// Adds the images that failed to decode to the catalogue's skip counts.
    pub fn count_unreadable(&self, counts: &mut super::catalogue::ReadCounts) {
        for _ in &self.trailer.unreadable {
            counts.skip(SkipReason::UnreadableImage);
        }
    }
}

pub fn cache_key(cat: &Catalogue, size: usize, fit: Fit) -> u64 {
    let mut h = Fnv64::default();
    h.u64(RECIPE_VERSION).u64(cat.fingerprint).u64(size as u64).str(fit.name()).str(RESIZE_FILTER);
    h.finish()
}

/// The platform's user cache folder for gan-engine: `$XDG_CACHE_HOME/gan-engine`, else
/// `~/.cache/gan-engine` (`%LOCALAPPDATA%\gan-engine` on Windows).
pub fn default_cache_dir() -> Result<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(x) = non_empty("XDG_CACHE_HOME") {
        return Ok(x.join("gan-engine"));
    }
    if cfg!(windows) {
        if let Some(x) = non_empty("LOCALAPPDATA") {
            return Ok(x.join("gan-engine"));
        }
    }
    if let Some(h) = non_empty("HOME") {
        return Ok(h.join(".cache").join("gan-engine"));
    }
    bail!("no user cache folder ($XDG_CACHE_HOME and $HOME are unset): pass --cache-dir")
}

/// `<folder name>-<hash of its canonical path>-<size>px-<fit>.cache`: one file per data set,
/// size and fit mode, so a changed data set replaces its old cache instead of adding one.
pub fn cache_file_name(root: &Path, size: usize, fit: Fit) -> String {
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let base: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(40).collect())
        .unwrap_or_else(|| "data".to_string());
    let mut h = Fnv64::default();
    h.str(&canonical.to_string_lossy());
    format!("{base}-{:016x}-{size}px-{}.cache", h.finish(), fit.name())
}

/// Opens the valid cache for `cat`, or builds it (with a progress bar if `progress`).
pub fn load_or_build(cat: &Catalogue, size: usize, fit: Fit, cache_dir: &Path, progress: bool) -> Result<Cache> {
    let path = cache_dir.join(cache_file_name(&cat.root, size, fit));
    let key = format!("{:016x}", cache_key(cat, size, fit));
    if let Some(c) = open_valid(&path, &key, size, fit, cat.items.len()) {
        return Ok(c);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create the cache folder {}: pass --cache-dir with a writable folder", cache_dir.display()))?;
    build(cat, size, fit, &path, &key, progress)?;
    let mut c = open_valid(&path, &key, size, fit, cat.items.len()).with_context(|| format!("the cache {} just written does not read back", path.display()))?;
    c.built = true;
    Ok(c)
}

/// The cache at `path` if it is complete and was built for `key`; `None` means rebuild.
fn open_valid(path: &Path, key: &str, size: usize, fit: Fit, n_items: usize) -> Option<Cache> {
    let file = File::open(path).ok()?;
    // SAFETY: cache files are only ever replaced by rename, never written in place, so the
    // mapped inode does not change under us (a rebuild by another process makes a new file).
    let map = unsafe { Mmap::map(&file) }.ok()?;
    let trailer = parse(&map, key, size, fit, n_items)?;
    Some(Cache { path: path.to_path_buf(), trailer, map, image_bytes: 3 * size * size, built: false })
}

/// The trailer of a cache file's bytes if the file is complete and was built for `key`, at
/// `size` and `fit`, for a catalogue of `n_items`; `None` means rebuild. When it is `Some`,
/// the file holds every image the trailer lists.
pub fn parse(bytes: &[u8], key: &str, size: usize, fit: Fit, n_items: usize) -> Option<CacheTrailer> {
    if bytes.len() < PIXELS_OFFSET {
        return None;
    }
    let head: Header = bytemuck::pod_read_unaligned(&bytes[..PIXELS_OFFSET]);
    if &head.magic != MAGIC {
        return None;
    }
    let (t_off, t_len) = (usize::try_from(u64::from_le(head.trailer_offset)).ok()?, usize::try_from(u64::from_le(head.trailer_len)).ok()?);
    if t_off.checked_add(t_len)? != bytes.len() {
        return None;
    }
    let trailer: CacheTrailer = serde_json::from_slice(&bytes[t_off..]).ok()?;
    let image_bytes = 3 * size * size;
    let valid = trailer.key == key
        && trailer.size == size
        && trailer.fit == fit.name()
        && trailer.items.len().checked_mul(image_bytes).and_then(|b| b.checked_add(PIXELS_OFFSET)) == Some(t_off)
        && trailer.items.iter().all(|&i| (i as usize) < n_items);
    valid.then_some(trailer)
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

fn build(cat: &Catalogue, size: usize, fit: Fit, path: &Path, key: &str, progress: bool) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_cache(cat, size, fit, &tmp, key, progress)
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("cannot move the new cache into place at {}", path.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // Make the rename itself durable; failure here only risks a rebuild after a power cut.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    result
}

fn write_cache(cat: &Catalogue, size: usize, fit: Fit, tmp: &Path, key: &str, progress: bool) -> Result<()> {
    let file = File::create(tmp).with_context(|| format!("cannot create {}: pass --cache-dir with a writable folder", tmp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; PIXELS_OFFSET])?;
    let bar = if progress {
        let b = indicatif::ProgressBar::new(cat.items.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("preparing {pos}/{len} images at {msg} [{bar:30}] {per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_message(format!("{size}px"));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut trailer = CacheTrailer { key: key.to_string(), size, fit: fit.name().to_string(), items: Vec::new(), unreadable: Vec::new() };
    for (chunk_no, chunk) in cat.items.chunks(CHUNK).enumerate() {
        let prepared: Vec<Result<Vec<u8>>> = chunk.par_iter().map(|item| load_planar(&item.image, size, fit)).collect();
        for (k, r) in prepared.into_iter().enumerate() {
            match r {
                Ok(px) => {
                    out.write_all(&px)?;
                    trailer.items.push((chunk_no * CHUNK + k) as u32);
                }
                Err(e) => {
                    let img = &chunk[k].image;
                    // The decoder's own message, without the file name context added around it.
                    let reason = e.chain().nth(1).map(|c| c.to_string()).unwrap_or_else(|| e.to_string()).replace('\n', " ");
                    trailer.unreadable.push((img.display().to_string(), reason));
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let t_off = PIXELS_OFFSET + trailer.items.len() * 3 * size * size;
    let json = serde_json::to_vec(&trailer)?;
    out.write_all(&json)?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    let head = Header { magic: *MAGIC, trailer_offset: (t_off as u64).to_le(), trailer_len: (json.len() as u64).to_le(), zero: [0; 5] };
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytemuck::bytes_of(&head))?;
    file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    Ok(())
}
