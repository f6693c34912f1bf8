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
        for c in &captions {
            println!("{c}");
        }
        return Ok(());
    }
    let tfidf = Tfidf::fit(&captions, a.max_features);
    anyhow::ensure!(tfidf.dim() > 0, "{}: no caption has a word of two or more letters, so there is no vocabulary", source.describe());
    if a.vocab {
        for (i, (term, idf)) in tfidf.vocab.iter().zip(&tfidf.idf).enumerate() {
            println!("{i}\t{term}\t{idf}");
        }
        return Ok(());
    }
    for text in &a.encode {
        if tfidf.has_no_known_word(text) {
            eprintln!("warning: {text:?} has no word in the vocabulary; its vector is all zeros");
        }
        println!("{}", serde_json::to_string(&tfidf.encode(text))?);
    }
    Ok(())
}
