use anyhow::Result;
use gan_engine::data::{read_captions, DataSource};
use gan_engine::text::{Tfidf, DEFAULT_MAX_FEATURES};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["captions", "vocab", "encode"])))]
pub struct Args {
    /// Data folder: Kaggle layout (styles.csv + images/), captions.csv or captions.jsonl.
    /// Without it, the built-in synthetic catalogue that `train` uses by default.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the data set's captions, one per line.
    #[arg(long)]
    captions: bool,
    /// Print the vocabulary: feature index, term and idf, one per line.
    #[arg(long)]
    vocab: bool,
    /// Print the TF-IDF vector of each TEXT as a JSON array, one per line.
    #[arg(long, num_args = 1.., value_name = "TEXT")]
    encode: Vec<String>,
    /// Vocabulary size: the most frequent terms are kept.
    #[arg(long, default_value_t = DEFAULT_MAX_FEATURES)]
    max_features: usize,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.max_features > 0, "--max-features must be at least 1");
    let source = DataSource::from_arg(a.data);
    let (captions, summary) = read_captions(&source)?;
    eprintln!("{summary}");
    if a.captions {
        return print_lines(captions.iter().cloned());
    }
    let tfidf = Tfidf::fit(&captions, a.max_features);
    anyhow::ensure!(tfidf.dim() > 0, "{}: no caption has a word of two or more letters, so there is no vocabulary", source.describe());
    if a.vocab {
        return print_lines(tfidf.vocab.iter().zip(&tfidf.idf).enumerate().map(|(i, (term, idf))| format!("{i}\t{term}\t{idf}")));
    }
    for text in &a.encode {
        if tfidf.has_no_known_word(text) {
            eprintln!("warning: {text:?} has no word in the vocabulary; its vector is all zeros");
        }
    }
    print_lines(a.encode.iter().map(|text| serde_json::to_string(&tfidf.encode(text)).unwrap_or_default()))
}

/// Prints lines to stdout; a closed pipe (`| head`) ends the output quietly.
fn print_lines(mut lines: impl Iterator<Item = String>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = lines.try_for_each(|l| writeln!(out, "{l}")).and_then(|()| out.flush());
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
