use anyhow::Result;
use gan_engine::data::{prepare, DataSource, PrepareOptions};
use gan_engine::text::DEFAULT_MAX_FEATURES;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data folder: Kaggle layout (styles.csv + images/), captions.csv or captions.jsonl.
    #[arg(long)]
    data: PathBuf,
    /// Image side in pixels: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Centre-crop non-square images instead of padding them with white.
    #[arg(long)]
    crop: bool,
    /// Folder for the image cache (default: the user cache folder, e.g. ~/.cache/gan-engine).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Vocabulary size of the TF-IDF encoder checked along the way.
    #[arg(long, default_value_t = DEFAULT_MAX_FEATURES)]
    max_features: usize,
}

pub fn run(a: Args) -> Result<()> {
    let opts = PrepareOptions { size: a.size, crop: a.crop, cache_dir: a.cache_dir, max_features: a.max_features, progress: true, tfidf: None };
    let data = prepare(&DataSource::Folder(a.data), &opts)?;
    if let Some(path) = &data.cache_path {
        let mb = std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
        println!("cache: {} ({} images, {:.1} MB)", path.display(), data.len(), mb);
    }
    Ok(())
}
