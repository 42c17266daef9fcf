use serde::Serialize;
use serde_json::json;

use super::*;

const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const IMAGE_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Digest", "DIGEST"),
];

const VOLUMES_TABLE: &str = "table {{.Driver}}\t{{.Name}}";
const VOLUMES_RAW: &str = "name: {{.Name}}\ndriver: {{.Driver}}\n";
const VOLUME_HEADERS: &[(&str, &str)] = &[
    ("Name", "VOLUME NAME"),
    ("Driver", "DRIVER"),
    ("Mountpoint", "MOUNTPOINT"),
    ("Labels", "LABELS"),
    ("Scope", "SCOPE"),
];

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    repository: String,
    tag: String,
    #[serde(rename = "ID")]
    id: String,
    created_since: String,
    size: String,
}

fn images() -> Vec<ImageRow> {
    vec![
        ImageRow {
            repository: "busybox".into(),
            tag: "latest".into(),
            id: "a04f76681f15".into(),
            created_since: "2 minutes ago".into(),
            size: "1.99MB".into(),
        },
        ImageRow {
            repository: "localhost:5000/some/long-name".into(),
            tag: "1.0".into(),
            id: "0123456789ab".into(),
            created_since: "3 weeks ago".into(),
            size: "120MB".into(),
        },
    ]
}

fn volumes() -> Vec<serde_json::Value> {
    vec![
        json!({"Name": "foobar_baz", "Driver": "foo", "Labels": "", "Mountpoint": "/m/1", "Scope": "local"}),
        json!({"Name": "foobar_bar", "Driver": "bar", "Labels": "a=b", "Mountpoint": "/m/2", "Scope": "local"}),
    ]
}

fn list(format: &str, default: &str, headers: &[(&str, &str)], items: &[impl Serialize]) -> String {
    render_list(format, default, headers, items).unwrap_or_else(|e| panic!("{format:?}: {e}"))
}

fn list_err(format: &str, items: &[impl Serialize]) -> String {
    match render_list(format, VOLUMES_TABLE, VOLUME_HEADERS, items) {
        Ok(s) => panic!("{format:?} rendered {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn resolves_formats_like_docker() {
    let t = |s: &str| Output::resolve(s, IMAGES_TABLE);
    let default =
        Output::Table("{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into());
    assert_eq!(t(""), default);
    assert_eq!(t("table"), default);
    assert_eq!(
        t("table {{.ID}}\\t{{.Tag}}"),
        Output::Table("{{.ID}}\t{{.Tag}}".into())
    );
    assert_eq!(t("table{{.ID}}"), Output::Table("{{.ID}}".into()));
    assert_eq!(t("json"), Output::Json);
    assert_eq!(t("{{json .}}"), Output::Template("{{json .}}".into()));
    assert_eq!(t("  {{.ID}}\\n "), Output::Template("{{.ID}}\n".into()));
    assert_eq!(t("raw"), Output::Template("raw".into()));
    assert_eq!(
        Output::resolve_with_raw("raw", VOLUMES_TABLE, VOLUMES_RAW),
        Output::Raw(VOLUMES_RAW.into())
    );
    assert_eq!(
        Output::resolve_with_raw("", VOLUMES_TABLE, VOLUMES_RAW),
        Output::Table("{{.Driver}}\t{{.Name}}".into())
    );
    assert_eq!(Output::Json.template(), "{{json .}}");
    assert!(t("table").is_table() && !t("json").is_table());
}

#[test]
fn default_images_table() {
    assert_eq!(
        list("", IMAGES_TABLE, IMAGE_HEADERS, &images()),
        "REPOSITORY                      TAG       IMAGE ID       CREATED         SIZE\n\
         busybox                         latest    a04f76681f15   2 minutes ago   1.99MB\n\
         localhost:5000/some/long-name   1.0       0123456789ab   3 weeks ago     120MB\n"
    );
    assert_eq!(
        list("", IMAGES_TABLE, IMAGE_HEADERS, &images()[..1]),
        "REPOSITORY   TAG       IMAGE ID       CREATED         SIZE\n\
         busybox      latest    a04f76681f15   2 minutes ago   1.99MB\n"
    );
}

#[test]
fn docker_volume_cases() {
    let v = volumes();
    let vl = |f: &str| {
        Formatter::new(
            &Output::resolve_with_raw(f, VOLUMES_TABLE, VOLUMES_RAW),
            VOLUME_HEADERS,
        )
        .unwrap()
        .render(&v)
        .unwrap()
    };
    assert_eq!(
        vl("table"),
        "DRIVER    VOLUME NAME\nfoo       foobar_baz\nbar       foobar_bar\n"
    );
    assert_eq!(
        vl("table {{.Name}}"),
        "VOLUME NAME\nfoobar_baz\nfoobar_bar\n"
    );
    assert_eq!(
        vl("raw"),
        "name: foobar_baz\ndriver: foo\n\nname: foobar_bar\ndriver: bar\n\n"
    );
    assert_eq!(vl("{{.Name}}"), "foobar_baz\nfoobar_bar\n");
    assert_eq!(vl("{{json .Name}}"), "\"foobar_baz\"\n\"foobar_bar\"\n");
}

#[test]
fn empty_lists() {
    let none: Vec<serde_json::Value> = vec![];
    assert_eq!(
        list("table {{.Name}}", VOLUMES_TABLE, VOLUME_HEADERS, &none),
        "VOLUME NAME\n"
    );
    assert_eq!(
        list("", VOLUMES_TABLE, VOLUME_HEADERS, &none),
        "DRIVER    VOLUME NAME\n"
    );
    assert_eq!(list("{{.Name}}", VOLUMES_TABLE, VOLUME_HEADERS, &none), "");
    assert_eq!(list("json", VOLUMES_TABLE, VOLUME_HEADERS, &none), "");
}

#[test]
fn json_lines_have_sorted_keys() {
    assert_eq!(
        list("json", VOLUMES_TABLE, VOLUME_HEADERS, &volumes()),
        "{\"Driver\":\"foo\",\"Labels\":\"\",\"Mountpoint\":\"/m/1\",\"Name\":\"foobar_baz\",\"Scope\":\"local\"}\n\
         {\"Driver\":\"bar\",\"Labels\":\"a=b\",\"Mountpoint\":\"/m/2\",\"Name\":\"foobar_bar\",\"Scope\":\"local\"}\n"
    );
    // The template function does not escape HTML characters (SetEscapeHTML(false)).
    let items = [json!({"Name": "<a&b>"})];
    assert_eq!(
        list("{{json .}}", VOLUMES_TABLE, VOLUME_HEADERS, &items),
        "{\"Name\":\"<a&b>\"}\n"
    );
}

#[test]
fn custom_templates_are_not_aligned() {
    assert_eq!(
        list(
            "{{.Name}}\\t{{.Driver}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &volumes()
        ),
        "foobar_baz\tfoo\nfoobar_bar\tbar\n"
    );
    assert_eq!(
        list(
            "{{.Name}}: {{if .Labels}}{{.Labels}}{{else}}-{{end}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &volumes()
        ),
        "foobar_baz: -\nfoobar_bar: a=b\n"
    );
    assert_eq!(
        list(
            "{{println .Name}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &volumes()[..1]
        ),
        "foobar_baz\n\n"
    );
}

#[test]
fn table_with_functions_keeps_header_text() {
    let v = volumes();
    assert_eq!(
        list(
            "table {{lower .Name}}\t{{upper .Driver}}\t{{truncate .Scope 3}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &v
        ),
        "VOLUME NAME   DRIVER    SCOPE\nfoobar_baz    FOO       loc\nfoobar_bar    BAR       loc\n"
    );
    // `pad` is applied to the header too, as in docker/cli.
    assert_eq!(
        list(
            "table {{pad .Driver 1 1}}|{{.Name}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &v[..1]
        ),
        " DRIVER |VOLUME NAME\n foo |foobar_baz\n"
    );
    assert_eq!(
        list(
            "table {{title .Name}}\t{{join (split .Mountpoint \"/\") \":\"}}",
            VOLUMES_TABLE,
            VOLUME_HEADERS,
            &v[..1]
        ),
        "VOLUME NAME   MOUNTPOINT\nFoobar_baz    :m:1\n"
    );
}

#[test]
fn header_falls_back_to_field_names() {
    let items = [json!({"CreatedAt": "x", "ImageID": "y", "Foo": "z"})];
    assert_eq!(
        list(
            "table {{.CreatedAt}}\t{{.ImageID}}\t{{.Foo}}",
            VOLUMES_TABLE,
            &[],
            &items
        ),
        "CREATED AT   IMAGE ID   FOO\nx            y          z\n"
    );
    assert_eq!(default_header("HTTPServer"), "HTTP SERVER");
    assert_eq!(default_header("ID"), "ID");
    assert_eq!(default_header("Mountpoint"), "MOUNTPOINT");
}

#[test]
fn tabwriter_matches_go() {
    // Go: cell width = max(minwidth 10, text + padding 3); last cell never padded.
    assert_eq!(tabwrite("a\tb\n"), "a         b\n");
    assert_eq!(tabwrite("abcdefghij\tb\n"), "abcdefghij   b\n");
    assert_eq!(tabwrite("a\t\tc\n"), "a                   c\n");
    assert_eq!(tabwrite("a\tb\t\n"), "a         b         \n");
    // Only contiguous lines form a column.
    assert_eq!(
        tabwrite("aaaaaaaaaaaa\tb\nno tabs\nc\td\n"),
        "aaaaaaaaaaaa   b\nno tabs\nc         d\n"
    );
    // Wide characters count as two columns, like go-runewidth in docker/cli's tabwriter.
    assert_eq!(
        tabwrite("日本語タグ\tx\nab\ty\n"),
        "日本語タグ   x\nab           y\n"
    );
    assert_eq!(tabwrite("é\tx\n"), "é         x\n");
    assert_eq!(tabwrite(""), "");
    assert_eq!(tabwrite("no newline\tat end"), "no newline   at end");
}

#[test]
fn template_errors() {
    let v = volumes();
    assert_eq!(
        list_err("{{.Name}", &v),
        "template parsing error: template: :1: unexpected \"}\" in operand"
    );
    assert_eq!(
        list_err("table {{.Name}", &v),
        "template parsing error: template: :1: unexpected \"}\" in operand"
    );
    assert_eq!(
        list_err("{{InvalidFunction}}", &v),
        "template parsing error: template: :1: function \"InvalidFunction\" not defined"
    );
    assert_eq!(
        list_err("{{.Name}}\n{{if .Name}}{{nosuch .Name}}{{end}}", &v),
        "template parsing error: template: :2: function \"nosuch\" not defined"
    );
    let none: [serde_json::Value; 0] = [];
    assert_eq!(
        list_err("{{.Name | nope}}", &none),
        "template parsing error: template: :1: function \"nope\" not defined"
    );
    assert_eq!(
        list_err("{{.Name", &v),
        "template parsing error: template: :1: unclosed action"
    );
    assert_eq!(
        list_err("{{.Foo}}", &v),
        "template parsing error: template: executing \"\" at <.Foo>: map has no entry for key \"Foo\""
    );
    assert_eq!(
        list_err("table {{.Name}}\t{{.Nope}}", &v),
        "template parsing error: template: executing \"\" at <.Nope>: map has no entry for key \"Nope\""
    );
    let e = list_err("{{upper 3}}", &v);
    assert!(
        e.starts_with("template parsing error: template: executing \"\": "),
        "{e}"
    );
    assert!(e.contains("expected string; got int"), "{e}");
    // A failing item means no output at all.
    let mixed = [json!({"Name": "ok"}), json!({"Other": 1})];
    assert!(render_list("{{.Name}}", VOLUMES_TABLE, VOLUME_HEADERS, &mixed).is_err());
    // Errors are one line.
    assert!(!list_err("{{.Name}", &v).contains('\n'));
}

#[test]
fn writes_to_any_writer() {
    let f = Formatter::new(&Output::resolve("{{.Name}}", VOLUMES_TABLE), VOLUME_HEADERS).unwrap();
    let mut out: Vec<u8> = Vec::new();
    f.write(&mut out, &volumes()).unwrap();
    assert_eq!(out, b"foobar_baz\nfoobar_bar\n");
    assert_eq!(f.output(), &Output::Template("{{.Name}}".into()));
}

#[derive(Serialize)]
struct InspectDoc {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Config")]
    config: serde_json::Value,
    #[serde(rename = "Args")]
    args: Vec<String>,
}

fn doc() -> InspectDoc {
    InspectDoc {
        id: "sha256:abc".into(),
        size: 53317,
        // Values keep the order they were built in (serde_json's preserve_order): maps that
        // Docker marshals sorted come from sorted sources (BTreeMap), structs keep field order.
        config: json!({"Env": [], "Labels": {"a": "<1>", "b": "2"}}),
        args: vec![],
    }
}

#[test]
fn inspect_default_is_indented_array() {
    assert_eq!(
        render_inspect("", &[doc()]).unwrap(),
        "[\n    {\n        \"Id\": \"sha256:abc\",\n        \"Size\": 53317,\n        \"Config\": {\n            \"Env\": [],\n            \"Labels\": {\n                \"a\": \"\\u003c1\\u003e\",\n                \"b\": \"2\"\n            }\n        },\n        \"Args\": []\n    }\n]\n"
    );
    let two = [json!({"Dns": "0.0.0.0"}), json!({"Dns": "1.1.1.1"})];
    assert_eq!(
        render_inspect("", &two).unwrap(),
        "[\n    {\n        \"Dns\": \"0.0.0.0\"\n    },\n    {\n        \"Dns\": \"1.1.1.1\"\n    }\n]\n"
    );
    let none: [serde_json::Value; 0] = [];
    assert_eq!(render_inspect("", &none).unwrap(), "[]\n");
    assert_eq!(render_inspect("json", &none).unwrap(), "[]\n");
}

#[test]
fn inspect_json_is_compact() {
    assert_eq!(
        render_inspect("json", &[doc()]).unwrap(),
        "[{\"Id\":\"sha256:abc\",\"Size\":53317,\"Config\":{\"Env\":[],\"Labels\":{\"a\":\"\\u003c1\\u003e\",\"b\":\"2\"}},\"Args\":[]}]\n"
    );
}

#[test]
fn inspect_templates() {
    let d = [doc()];
    assert_eq!(
        render_inspect("{{.Size}} {{.Id}}", &d).unwrap(),
        "53317 sha256:abc\n"
    );
    assert_eq!(
        render_inspect("{{json .Config.Labels}}", &d).unwrap(),
        "{\"a\":\"<1>\",\"b\":\"2\"}\n"
    );
    assert_eq!(
        render_inspect("{{index .Config.Labels \"a\"}}", &d).unwrap(),
        "<1>\n"
    );
    assert_eq!(
        render_inspect("{{index .Config.Labels \"zz\"}}|", &d).unwrap(),
        "|\n"
    );
    assert_eq!(
        render_inspect("{{.Config.Labels.zz}}", &d).unwrap(),
        "<no value>\n"
    );
    assert_eq!(
        render_inspect("{{range .Config.Env}}x{{end}}.", &d).unwrap(),
        ".\n"
    );
    // Inspect templates are taken literally: no `\t` translation, no trimming.
    assert_eq!(render_inspect(" {{.Size}}\\t", &d).unwrap(), " 53317\\t\n");
    let two = [json!({"Dns": "0.0.0.0"}), json!({"Dns": "1.1.1.1"})];
    assert_eq!(
        render_inspect("{{.Dns}}", &two).unwrap(),
        "0.0.0.0\n1.1.1.1\n"
    );
    let none: [serde_json::Value; 0] = [];
    assert_eq!(render_inspect("{{.Dns}}", &none).unwrap(), "\n");
}

#[test]
fn inspect_errors() {
    let d = [doc()];
    assert_eq!(
        render_inspect("{{.Foo}}", &d).unwrap_err().to_string(),
        "template parsing error: template: executing \"\" at <.Foo>: map has no entry for key \"Foo\""
    );
    assert_eq!(
        render_inspect("{{.Id", &d).unwrap_err().to_string(),
        "template parsing error: template: :1: unclosed action"
    );
    // One failing object does not stop the others.
    let mut insp = Inspector::new("{{.Dns}}").unwrap();
    insp.add(&json!({"Dns": "a"})).unwrap();
    assert!(insp.add(&json!({"Other": "b"})).is_err());
    insp.add(&json!({"Dns": "c"})).unwrap();
    let mut out = Vec::new();
    insp.finish(&mut out).unwrap();
    assert_eq!(out, b"a\nc\n");
}
