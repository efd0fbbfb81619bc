//! `predictor.json` ([`PredictorDescription`]) on arbitrary input: any bytes or JSON are an error
//! or a description that passes every check, never a panic; any valid description round-trips;
//! and each field `apply` relies on, missing or changed to something invalid, is refused.

use binann_ai::predictor::{self, Normalisation, PredictorDescription, PredictorError, PredictorFiles, PredictorMode};
use proptest::prelude::*;
use serde_json::Value;

/// A plain file name (no separators, not `.` or `..`): letters, digits and a few odd characters.
fn file_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,\"'._é日-]{1,16}".prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn valid() -> impl Strategy<Value = PredictorDescription> {
    let files = prop_oneof![
        (file_name(), file_name()).prop_map(|(b, h)| (
            PredictorMode::Head,
            PredictorFiles { backbone_weights: Some(b), head_weights: Some(h), model_weights: None }
        )),
        file_name().prop_map(|m| (PredictorMode::Finetune, PredictorFiles { model_weights: Some(m), ..PredictorFiles::default() })),
    ];
    // Thresholds of six decimals, as a person types them: JSON carries them exactly.
    let threshold = (0u32..=1_000_000).prop_map(|k| f64::from(k) / 1e6);
    (files, 32u32..=1024, threshold, any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), ".{0,20}").prop_map(
        |((mode, files), input_size, threshold, a, b, checkpoint_generation, trained_ms, color)| PredictorDescription {
            format: predictor::FORMAT.into(),
            version: predictor::VERSION,
            backbone: binann_model::BACKBONE_NAME.into(),
            files,
            mode,
            input_size,
            normalisation: Normalisation { color, ..Normalisation::imagenet() },
            threshold,
            labels_used: a.max(b),
            positives: a.min(b),
            checkpoint_generation,
            trained_ms,
        },
    )
}

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(PredictorDescription::from_json(&bytes).is_err(), "{:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_is_an_error(value in json()) {
        let text = value.to_string();
        prop_assert!(PredictorDescription::from_json(text.as_bytes()).is_err(), "{}", text);
    }

    #[test]
    fn valid_descriptions_round_trip(d in valid()) {
        prop_assert!(d.check().is_ok(), "{:?}", d.check());
        let back = PredictorDescription::from_json(d.to_json().as_bytes()).unwrap();
        prop_assert_eq!(&back, &d);
        // Compact JSON (not what export writes) reads the same.
        prop_assert_eq!(PredictorDescription::from_json(serde_json::to_string(&d).unwrap().as_bytes()).unwrap(), d);
    }

    /// Any field removed, or replaced by any JSON value: refused, or (a replacement that happens
    /// to be valid) a description that passes every check. Never a panic.
    #[test]
    fn a_mangled_field_is_refused_or_still_valid(d in valid(), field in any::<prop::sample::Index>(), replacement in proptest::option::of(json())) {
        let mut value = serde_json::to_value(&d).unwrap();
        let object = value.as_object_mut().unwrap();
        let key = object.keys().nth(field.index(object.len())).unwrap().clone();
        let removed = replacement.is_none();
        match replacement {
            None => { object.remove(&key); }
            Some(v) => { object.insert(key.clone(), v); }
        }
        let text = value.to_string();
        if removed {
            prop_assert!(PredictorDescription::from_json(text.as_bytes()).is_err(), "without {}: {}", key, text);
        } else if let Ok(parsed) = PredictorDescription::from_json(text.as_bytes()) {
            prop_assert!(parsed.check().is_ok());
            prop_assert_eq!(PredictorDescription::from_json(parsed.to_json().as_bytes()).unwrap(), parsed);
        }
    }

    /// Weights file names that would leave the predictor folder are refused.
    #[test]
    fn file_names_outside_the_folder_are_refused(d in valid(), name in prop_oneof![
        "[a-z]{0,6}/[a-z]{1,6}", "[a-z]{0,6}\\\\[a-z]{1,6}", "/[a-z]{1,8}", "\\.\\./[a-z]{1,8}", Just("..".to_owned()), Just(String::new()),
    ]) {
        let mut d = d;
        match d.mode {
            PredictorMode::Head => d.files.head_weights = Some(name),
            PredictorMode::Finetune => d.files.model_weights = Some(name),
        }
        prop_assert!(matches!(PredictorDescription::from_json(d.to_json().as_bytes()), Err(PredictorError::FileName(_))));
    }
}

/// Each check, one field at a time, with the error it gives.
#[test]
fn each_invalid_field_gives_its_error() {
    let base = PredictorDescription {
        format: predictor::FORMAT.into(),
        version: predictor::VERSION,
        backbone: binann_model::BACKBONE_NAME.into(),
        files: PredictorFiles { model_weights: Some(predictor::MODEL_FILE.into()), ..PredictorFiles::default() },
        mode: PredictorMode::Finetune,
        input_size: 64,
        normalisation: Normalisation::imagenet(),
        threshold: 0.5,
        labels_used: 10,
        positives: 3,
        checkpoint_generation: 4,
        trained_ms: 5,
    };
    let refused = |change: &dyn Fn(&mut PredictorDescription)| {
        let mut d = base.clone();
        change(&mut d);
        PredictorDescription::from_json(d.to_json().as_bytes()).unwrap_err()
    };
    assert!(matches!(refused(&|d| d.format = "binann".into()), PredictorError::Format(_)));
    assert!(matches!(refused(&|d| d.version = 2), PredictorError::Version(2)));
    assert!(matches!(refused(&|d| d.version = 0), PredictorError::Version(0)));
    assert!(matches!(refused(&|d| d.backbone = "resnet50".into()), PredictorError::Backbone(_)));
    assert!(matches!(refused(&|d| d.input_size = 16), PredictorError::InputSize(16)));
    assert!(refused(&|d| d.threshold = 1.5).to_string().contains("between 0 and 1"));
    assert!(matches!(refused(&|d| d.positives = 11), PredictorError::Counts { .. }));
    assert!(matches!(refused(&|d| d.normalisation.mean[1] = 0.5), PredictorError::Normalisation(_)));
    assert!(matches!(refused(&|d| d.mode = PredictorMode::Head), PredictorError::Files { .. }));
    assert!(matches!(refused(&|d| d.files.head_weights = Some("h".into())), PredictorError::Files { .. }));
    assert!(matches!(refused(&|d| d.files.model_weights = Some("../model.safetensors".into())), PredictorError::FileName(_)));
    assert!(matches!(PredictorDescription::from_json(b"{\"format\": \"binann-predictor\"}"), Err(PredictorError::Json(_))));
    assert_eq!(PredictorDescription::from_json(base.to_json().as_bytes()).unwrap(), base);
}

/// A description as the first binann-predict wrote it (by hand, before this type) still loads.
#[test]
fn a_description_from_the_first_exporter_loads() {
    let text = r#"{
  "format": "binann-predictor",
  "version": 1,
  "backbone": "mobilenet_v2",
  "files": { "backbone_weights": "backbone.safetensors", "head_weights": "head.safetensors" },
  "mode": "head",
  "input_size": 96,
  "normalisation": { "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color": "RGB, grayscale replicated" },
  "threshold": 0.5,
  "labels_used": 40,
  "positives": 12,
  "checkpoint_generation": 3,
  "trained_ms": 1764000000000
}"#;
    let d = PredictorDescription::from_json(text.as_bytes()).unwrap();
    assert_eq!(
        (d.mode, d.input_size, d.labels_used, d.files.head_weights.as_deref()),
        (PredictorMode::Head, 96, 40, Some("head.safetensors"))
    );
}
