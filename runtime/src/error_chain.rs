//! An error with its causes as one line, `error: cause: cause`, each part once: many errors
//! (hyper's, reqwest's, ours) say their cause in their own text and still give it as their
//! `source()`. The command line prints errors so, and [`net::explain`](crate::net::explain)
//! request errors.

/// `error` and every cause whose text its line does not hold yet.
pub(crate) fn render(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}
