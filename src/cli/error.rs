//! Errors for people: the cause chain on one line, each cause once.

/// An error as one line for a person: each cause once. Some libraries' errors repeat their
/// sources in their own message, so a cause already said by an earlier one is left out.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !said.iter().any(|s| s.contains(text.trim())) {
            said.push(text);
        }
    }
    said.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("no file")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("reading config: {0}")]
        struct Repeats(#[source] Inner);
        let err = anyhow::Error::new(Repeats(Inner)).context("starting");
        assert_eq!(one_line(&err), "starting: reading config: no file");
        let plain = anyhow::anyhow!("no file").context("reading config");
        assert_eq!(one_line(&plain), "reading config: no file");
    }
}
