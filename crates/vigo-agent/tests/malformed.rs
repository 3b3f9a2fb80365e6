//! The validator never panics, whatever it is given: a corpus of broken inputs
//! plus random bytes, each through the whole pipeline with the real registry.

use proptest::prelude::*;
use vigo_executors::Registry;
use vigo_model::source::Sources;

fn validate(text: &str) -> Result<(), vigo_model::Diagnostics> {
    let sources = Sources::from_strings(&[("modules/m.yaml", text)], &[]);
    vigo_model::validate::compile(&sources, &Registry::builtin()).map(|_| ())
}

const GOOD: &str = "name: m
vars:
  port: 80
resources:
  - name: a
    type: file
    target_path: /tmp/vigo-malformed/a
    content: hello
    mode: \"0644\"
    notify: [b]
  - name: b
    type: exec
    command: [\"/bin/true\"]
    when: changed
";

fn corpus() -> Vec<String> {
    let mut c: Vec<String> = vec![
        String::new(),
        "~".into(),
        "- a\n- b\n".into(),
        "just a string".into(),
        "name: [unclosed".into(),
        "name: m\nresources: 5\n".into(),
        "name: m\nresources:\n  - 5\n  - [a]\n  - ~\n".into(),
        "name: 5\nresources: []\n".into(),
        "name: m\nresources:\n  - name: [x]\n    type: {a: b}\n".into(),
        "name: m\nresources:\n  - name: a\n    type: file\n    target_path: 7\n    mode: 644\n".into(),
        "name: m\nresources:\n  - name: a\n    type: file\n    target_path: /x\n    name: again\n".into(),
        "name: m\nresources:\n  - name: a\n    type: file\n    target_path: /x\n    when: \"((((\"\n".into(),
        "name: m\nresources:\n  - {? [a, b] : c, name: a, type: file}\n".into(),
        "name: m\nresources:\n  - &a {name: a, type: file, target_path: /x}\n  - *a\n".into(),
        "name: m\nresources:\n  - name: a\n    type: exec\n    command: {nested: [1, 2, {x: y}]}\n".into(),
        "name: m\n\tresources: tab\n".into(),
        "name: m\nresources:\n  - name: a\n    type: file\n    target_path: /x\n    notify: [a]\n".into(),
        "a: &x [*x]\n".into(),
        "!!binary aGVsbG8=\n".into(),
        "name: !custom m\nresources: []\n".into(),
        format!("name: m\nresources:\n  - name: {}\n    type: file\n    target_path: /x\n", "n".repeat(1_000_000)),
        format!("name: m\nresources:\n{}", "  - name: a\n    type: file\n".repeat(5_000)),
        format!("name: m\nvars: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        "lol: &a [a,a,a,a,a,a,a,a]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n".into(),
        "\u{feff}name: m\nresources: []\n".into(),
        "name: m\nresources:\n  - name: \"\\u0000\"\n    type: file\n    target_path: \"/tmp/\\u0000\"\n".into(),
    ];
    for cut in (0..GOOD.len()).step_by(7) {
        c.push(GOOD[..cut].to_string());
    }
    c
}

#[test]
fn the_corpus_yields_errors_never_panics() {
    for (i, text) in corpus().iter().enumerate() {
        let result = std::panic::catch_unwind(|| validate(text));
        let result = result.unwrap_or_else(|_| panic!("corpus entry {i} panicked: {:?}", &text[..text.len().min(80)]));
        if let Err(d) = result {
            assert!(!d.is_empty());
            for diag in d.iter() {
                assert!(!diag.message.is_empty(), "entry {i}: empty message");
            }
        }
    }
    assert!(validate(GOOD).is_ok(), "{:?}", validate(GOOD));
}

#[test]
fn binary_garbage_is_an_error() {
    let garbage: Vec<u8> = (0u32..4096).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let text = String::from_utf8_lossy(&garbage);
    assert!(validate(&text).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        let _ = validate(&s);
    }

    #[test]
    fn mutated_modules_never_panic(pos in 0usize..GOOD.len(), byte in any::<u8>()) {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[pos] = byte;
        let _ = validate(&String::from_utf8_lossy(&bytes));
    }
}
