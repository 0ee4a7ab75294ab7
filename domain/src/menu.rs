//! The division menu of queue mode (seed cloudchat-ten-features.md, Fitur 3 and 4): the
//! welcome text with the numbered divisions, how a customer's answer picks one, the
//! optional detection of a division from a first message's words, and the message
//! templates.
//!
//! Matching ignores case, accents and punctuation: "Tagihan!", "TAGIHAN" and "tagihán" are
//! the same answer.

/// A division as the menu shows it, in menu order.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuDivision {
    /// The division id.
    pub id: String,
    /// Its name ("Billing").
    pub name: String,
    /// What it handles, shown after the name.
    pub description: Option<String>,
    /// Words that select it ("tagihan", "bayar").
    pub keywords: Vec<String>,
    /// When the wait is shown: tickets waiting and the estimated wait in minutes.
    pub wait: Option<(i64, i64)>,
}

/// Lower case, accents and punctuation removed, runs of spaces collapsed.
pub fn normalise(text: &str) -> String {
    let folded: String = text
        .chars()
        .flat_map(char::to_lowercase)
        .map(fold_accent)
        .map(|c| {
            if c.is_alphanumeric() || c == '#' {
                c
            } else {
                ' '
            }
        })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The base letter of the accented Latin letters customers type.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' | 'ş' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ř' => 'r',
        'ť' | 'ţ' => 't',
        'ł' => 'l',
        'ğ' => 'g',
        other => other,
    }
}

/// The menu: the welcome text, then one line per division, "1. Billing - Untuk pertanyaan
/// pembayaran (3 antrian, ~15 menit)".
pub fn render_menu(welcome: &str, divisions: &[MenuDivision]) -> String {
    let mut menu = welcome.trim().to_string();
    for (index, division) in divisions.iter().enumerate() {
        menu.push('\n');
        menu.push_str(&format!("{}. {}", index + 1, division.name));
        if let Some(description) = division.description.as_deref().map(str::trim) {
            if !description.is_empty() {
                menu.push_str(" - ");
                menu.push_str(description);
            }
        }
        if let Some((waiting, minutes)) = division.wait {
            menu.push_str(&format!(" ({waiting} antrian, ~{minutes} menit)"));
        }
    }
    menu
}

/// The division an answer to the menu picks: its number, its name or one of its keywords;
/// `None` when the answer matches none (or is ambiguous), and the menu is shown again.
pub fn choose_division<'a>(
    answer: &str,
    divisions: &'a [MenuDivision],
) -> Option<&'a MenuDivision> {
    let answer = normalise(answer);
    if answer.is_empty() {
        return None;
    }
    if let Ok(number) = answer.parse::<usize>() {
        return number.checked_sub(1).and_then(|index| divisions.get(index));
    }
    if let Some(named) = divisions.iter().find(|d| normalise(&d.name) == answer) {
        return Some(named);
    }
    let matching: Vec<&MenuDivision> = divisions
        .iter()
        .filter(|d| {
            d.keywords
                .iter()
                .map(|k| normalise(k))
                .any(|k| !k.is_empty() && contains_phrase(&answer, &k))
                || contains_phrase(&answer, &normalise(&d.name))
        })
        .collect();
    match matching.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}

/// The division a free-text first message points to ("saya mau bayar tagihan" → Billing):
/// the one whose name or keywords occur most often as whole words; `None` when none occur
/// or two divisions tie.
pub fn detect_division<'a>(text: &str, divisions: &'a [MenuDivision]) -> Option<&'a MenuDivision> {
    let text = normalise(text);
    let mut best: Option<(&MenuDivision, usize)> = None;
    let mut tie = false;
    for division in divisions {
        let hits = division
            .keywords
            .iter()
            .chain(std::iter::once(&division.name))
            .map(|k| normalise(k))
            .filter(|k| !k.is_empty() && contains_phrase(&text, k))
            .count();
        if hits == 0 {
            continue;
        }
        match best {
            Some((_, top)) if hits < top => {}
            Some((_, top)) if hits == top => tie = true,
            _ => {
                best = Some((division, hits));
                tie = false;
            }
        }
    }
    if tie {
        None
    } else {
        best.map(|(division, _)| division)
    }
}

/// Whether `phrase` occurs in `text` as whole words (both normalised).
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let words: Vec<&str> = text.split(' ').collect();
    let wanted: Vec<&str> = phrase.split(' ').collect();
    !wanted.is_empty() && words.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

/// Whether the customer asked for their place (the check keyword, "#" by default).
pub fn is_check_keyword(text: &str, keyword: &str) -> bool {
    let keyword = keyword.trim();
    !keyword.is_empty() && (text.trim() == keyword || normalise(text) == normalise(keyword))
}

/// Fills a template's placeholders (`{division}`, `{queue_number}`, `{wait_minutes}`,
/// `{agent_name}`: whichever the caller gives). Placeholders without a value
/// are left as written, so a typo in a template shows instead of vanishing.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn divisions() -> Vec<MenuDivision> {
        let division =
            |id: &str, name: &str, description: Option<&str>, keywords: &[&str]| MenuDivision {
                id: id.into(),
                name: name.into(),
                description: description.map(Into::into),
                keywords: keywords.iter().map(|k| k.to_string()).collect(),
                wait: None,
            };
        vec![
            division(
                "d-billing",
                "Billing",
                Some("Untuk pertanyaan pembayaran dan invoice"),
                &["tagihan", "bayar", "invoice"],
            ),
            division(
                "d-support",
                "Support",
                Some("Bantuan teknis"),
                &["error", "rusak"],
            ),
            division("d-umum", "Umum", None, &[]),
        ]
    }

    #[test]
    fn the_menu_numbers_divisions_with_descriptions_and_waits() {
        let mut list = divisions();
        list[1].wait = Some((3, 15));
        assert_eq!(
            render_menu("Selamat datang!", &list),
            "Selamat datang!\n1. Billing - Untuk pertanyaan pembayaran dan invoice\n\
             2. Support - Bantuan teknis (3 antrian, ~15 menit)\n3. Umum"
        );
    }

    #[test]
    fn answers_pick_by_number_name_or_keyword_ignoring_case_and_accents() {
        let list = divisions();
        let pick = |answer: &str| choose_division(answer, &list).map(|d| d.id.as_str());
        assert_eq!(pick("1"), Some("d-billing"));
        assert_eq!(pick(" 2. "), Some("d-support"));
        assert_eq!(pick("3"), Some("d-umum"));
        assert_eq!(pick("4"), None);
        assert_eq!(pick("0"), None);
        assert_eq!(pick("billing"), Some("d-billing"));
        assert_eq!(pick("BILLING!"), Some("d-billing"));
        assert_eq!(pick("Tagihán"), Some("d-billing"));
        assert_eq!(pick("mau bayar"), Some("d-billing"));
        assert_eq!(pick("umum"), Some("d-umum"));
        assert_eq!(pick("halo"), None);
        assert_eq!(pick(""), None);
        // Two divisions named in one answer: ambiguous, the menu is shown again.
        assert_eq!(pick("billing atau support"), None);
    }

    #[test]
    fn detection_needs_a_clear_winner() {
        let list = divisions();
        let detect = |text: &str| detect_division(text, &list).map(|d| d.id.as_str());
        assert_eq!(
            detect("Saya mau bayar tagihan bulan ini"),
            Some("d-billing")
        );
        assert_eq!(detect("aplikasi error terus"), Some("d-support"));
        assert_eq!(detect("halo kak"), None);
        assert_eq!(detect("bayar tapi error"), None);
        // Whole words only: "bayaran" is not "bayar".
        assert_eq!(detect("bayaran"), None);
    }

    #[test]
    fn the_check_keyword_and_templates() {
        assert!(is_check_keyword(" # ", "#"));
        assert!(is_check_keyword("Cek", "cek"));
        assert!(!is_check_keyword("#1", "#"));
        assert_eq!(
            fill(
                "Anda akan di layani oleh tim {division}, Tunggu dalam antrian ke {queue_number}. {unknown}",
                &[("division", "Billing".into()), ("queue_number", "3".into())]
            ),
            "Anda akan di layani oleh tim Billing, Tunggu dalam antrian ke 3. {unknown}"
        );
    }
}
