//! The one redaction rule for everything a peer sends back: no run of 4 bytes or more of a
//! configured secret (a header value given to a tool, an S3 secret key or session token)
//! reaches stdout, stderr or a log, whatever the peer echoes and however it cuts the secret.
//!
//! Replacing only a whole secret is not enough: a receiver that echoes `Bearer%20TOKEN`,
//! or quotes `api-key=abc` from the request, or cuts the value at a quote, prints the
//! rest in the clear. So every run of text that also occurs inside a secret, 4 bytes or
//! longer, becomes `***`. Words that happen to occur inside a secret are hidden too: a
//! message that says less is the price of one that never says too much.

/// The shortest run of a secret that is hidden (and the shortest secret that counts).
pub const MIN_RUN: usize = 4;

/// The longest text looked at; the rest is cut (messages are for people, not archives).
pub const MAX_TEXT: usize = 64 * 1024;

/// Secrets to keep out of messages.
#[derive(Clone, Default)]
pub struct Secrets {
    items: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} kept out of messages)", self.items.len())
    }
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret (ignored when shorter than [`MIN_RUN`]: nothing of it can be hidden
    /// without hiding every word of that length). Its percent-decoded form is added too, so
    /// a value given encoded and echoed decoded (or the other way) is caught.
    pub fn add(&mut self, secret: &str) {
        for form in [secret.to_string(), percent_decoded(secret)] {
            let b = form.into_bytes();
            if b.len() >= MIN_RUN && !self.items.contains(&b) {
                self.items.push(b);
            }
        }
    }

    /// These secrets and `other`'s.
    pub fn with(mut self, other: &Secrets) -> Self {
        for s in &other.items {
            if !self.items.contains(s) {
                self.items.push(s.clone());
            }
        }
        self
    }

    /// True when nothing is kept out.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `text` with every run of [`MIN_RUN`] bytes or more that occurs inside a secret
    /// replaced by `***`, cut to [`MAX_TEXT`] bytes first.
    ///
    /// # Example
    /// ```
    /// let mut s = cfn_net::redact::Secrets::new();
    /// s.add("Bearer sk-live-123456");
    /// assert_eq!(s.redact("token=sk-live-12 (Bearer)"), "token=*** (***)");
    /// ```
    pub fn redact(&self, text: &str) -> String {
        let mut text = text;
        if text.len() > MAX_TEXT {
            text = &text[..text.floor_char_boundary(MAX_TEXT)];
        }
        if self.items.is_empty() {
            return text.to_string();
        }
        let b = text.as_bytes();
        let mut hidden = vec![false; b.len()];
        for i in 0..b.len() {
            let run = self
                .items
                .iter()
                .map(|s| longest_run_at(&b[i..], s))
                .max()
                .unwrap_or(0);
            if run >= MIN_RUN {
                hidden[i..i + run].iter_mut().for_each(|h| *h = true);
            }
        }
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if hidden[i] {
                out.extend_from_slice(b"***");
                while i < b.len() && hidden[i] {
                    i += 1;
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        // Cutting inside a multi-byte character leaves a fragment: shown as U+FFFD.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The parts of a URL that hold credentials (user info, query, fragment), as secrets; with
/// `path_too`, the path as well (a Slack or webhook URL's path is its key).
pub fn url_secrets_of(url: &str, path_too: bool) -> Secrets {
    let mut s = Secrets::new();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(cut);
    if let Some((user, _)) = host.rsplit_once('@') {
        s.add(user);
    }
    let query = tail.find(['?', '#']).map_or("", |i| &tail[i..]);
    if path_too && tail.len() > 1 {
        s.add(tail);
    } else if query.len() > 1 {
        s.add(query);
    }
    s
}

/// The length of the longest prefix of `text` that occurs somewhere in `secret`.
fn longest_run_at(text: &[u8], secret: &[u8]) -> usize {
    let first = text.first().copied();
    let mut best = 0;
    for j in 0..secret.len() {
        if Some(secret[j]) != first {
            continue;
        }
        let n = text
            .iter()
            .zip(&secret[j..])
            .take_while(|(a, b)| a == b)
            .count();
        best = best.max(n);
    }
    best
}

/// `%XX` sequences decoded, `+` kept (as a header value would be); invalid ones kept as
/// they are.
pub fn percent_decoded(s: &str) -> String {
    let bytes = percent_decode(s, false, false).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The one percent-decoder (header values here, query strings in cfn-serve): `%XX` decoded,
/// `+` as a space when `plus_as_space` (a query string); an invalid escape is an error when
/// `strict`, else kept as it is.
///
/// # Errors
/// "bad percent-encoding" for an invalid escape when `strict`.
pub fn percent_decode(s: &str, plus_as_space: bool, strict: bool) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None if strict => return Err("bad percent-encoding".into()),
                None => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Secrets {
        let mut s = Secrets::new();
        for x in list {
            s.add(x);
        }
        s
    }

    #[test]
    fn whole_secrets_and_every_run_of_four_bytes_are_hidden() {
        let s = secrets(&["Bearer TOKEN-abcdef"]);
        assert_eq!(s.redact("got Bearer TOKEN-abcdef"), "got ***");
        assert_eq!(s.redact("got Bearer%20TOKEN-abcdef"), "got ***%20***");
        assert_eq!(s.redact("token=KEN-ab;"), "token=***;");
        // Three bytes of a secret are not a run.
        assert_eq!(s.redact("abc_TOK"), "abc_TOK");
        assert_eq!(s.redact("nothing here"), "nothing here");
    }

    #[test]
    fn short_secrets_count_through_their_header_form() {
        // A 3-byte value is not hidden alone, but `name=value` as given in
        // OTEL_EXPORTER_OTLP_HEADERS is.
        let s = secrets(&["abc", "api-key=abc"]);
        assert_eq!(s.redact("unknown api-key=abc"), "unknown ***");
        assert_eq!(s.redact("value abc"), "value abc");
    }

    #[test]
    fn encoded_and_decoded_forms_are_both_caught() {
        let s = secrets(&["Bearer%20s3cr3t-value"]);
        assert_eq!(s.redact("Bearer s3cr3t-value"), "***");
        assert_eq!(s.redact("x Bearer%20s3cr3t-value"), "x ***");
    }

    #[test]
    fn no_run_of_a_secret_survives_any_cut() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let s = secrets(&[secret]);
        for i in 0..secret.len() {
            for j in i + MIN_RUN..=secret.len() {
                let text = format!("<Message>{}</Message>", &secret[i..j]);
                let out = s.redact(&text);
                for w in secret.as_bytes().windows(MIN_RUN) {
                    assert!(
                        !out.as_bytes().windows(MIN_RUN).any(|x| x == w),
                        "{out:?} keeps {:?}",
                        String::from_utf8_lossy(w)
                    );
                }
            }
        }
    }

    #[test]
    fn long_text_is_cut_and_multibyte_text_survives() {
        let s = secrets(&["ééééé"]);
        assert_eq!(s.redact("a ééé b"), "a *** b");
        assert_eq!(
            Secrets::new().redact(&"x".repeat(MAX_TEXT + 10)).len(),
            MAX_TEXT
        );
    }
}
