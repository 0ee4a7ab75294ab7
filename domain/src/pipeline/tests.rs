use cqrs_es::test::TestFramework;

use super::*;
use crate::actor::Actor;

fn as_role(role: Role, action: PipelinesAction) -> PipelinesCommand {
    PipelinesCommand {
        organization: "acme".into(),
        actor: Actor::new("boss", role),
        action,
    }
}

fn admin(action: PipelinesAction) -> PipelinesCommand {
    as_role(Role::Admin, action)
}

fn created(id: &str, default: bool) -> PipelinesEvent {
    PipelinesEvent::PipelineCreated {
        organization: "acme".into(),
        pipeline_id: id.into(),
        name: format!("Pipeline {id}"),
        description: None,
        color: None,
        default,
    }
}

fn stage(id: &str) -> Stage {
    Stage {
        stage_id: id.into(),
        name: format!("Stage {id}"),
        color: None,
        closed: false,
        automation: vec![],
    }
}

fn added(pipeline: &str, id: &str, position: usize) -> PipelinesEvent {
    PipelinesEvent::StageAdded {
        pipeline_id: pipeline.into(),
        stage: stage(id),
        position,
    }
}

/// Pipeline "p" with stages a, b, c; pipeline "q" with stage x.
fn two_pipelines() -> Vec<PipelinesEvent> {
    vec![
        created("p", true),
        added("p", "a", 0),
        added("p", "b", 1),
        added("p", "c", 2),
        created("q", false),
        added("q", "x", 0),
    ]
}

fn pipelines() -> TestFramework<OrganizationPipelines> {
    TestFramework::with(())
}

#[test]
fn the_first_pipeline_is_the_default_and_names_colours_are_checked() {
    pipelines()
        .given_no_previous_events()
        .when(admin(PipelinesAction::Create {
            pipeline_id: "p".into(),
            name: " Sales ".into(),
            description: Some("  ".into()),
            color: Some("#1a2b3c".into()),
        }))
        .then_expect_events(vec![PipelinesEvent::PipelineCreated {
            organization: "acme".into(),
            pipeline_id: "p".into(),
            name: "Sales".into(),
            description: None,
            color: Some("#1A2B3C".into()),
            default: true,
        }]);
    pipelines()
        .given(vec![created("p", true)])
        .when(admin(PipelinesAction::Create {
            pipeline_id: "q".into(),
            name: "Support".into(),
            description: None,
            color: None,
        }))
        .then_expect_events(vec![PipelinesEvent::PipelineCreated {
            organization: "acme".into(),
            pipeline_id: "q".into(),
            name: "Support".into(),
            description: None,
            color: None,
            default: false,
        }]);
    pipelines()
        .given_no_previous_events()
        .when(admin(PipelinesAction::Create {
            pipeline_id: "p".into(),
            name: "Sales".into(),
            description: None,
            color: Some("red".into()),
        }))
        .then_expect_error(DomainError::InvalidInput(
            "color must be #RRGGBB, got 'red'".into(),
        ));
    pipelines()
        .given_no_previous_events()
        .when(as_role(
            Role::Agent,
            PipelinesAction::Create {
                pipeline_id: "p".into(),
                name: "Sales".into(),
                description: None,
                color: None,
            },
        ))
        .then_expect_error(DomainError::NotPermitted(
            "only admins manage pipelines".into(),
        ));
}

#[test]
fn another_organization_finds_nothing() {
    let mut other = admin(PipelinesAction::Archive {
        pipeline_id: "p".into(),
    });
    other.organization = "globex".into();
    pipelines()
        .given(two_pipelines())
        .when(other)
        .then_expect_error(DomainError::NotFound);
}

#[test]
fn one_default_per_organization_moves_on_archive_and_on_request() {
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::SetDefault {
            pipeline_id: "q".into(),
        }))
        .then_expect_events(vec![PipelinesEvent::DefaultPipelineSet {
            pipeline_id: "q".into(),
        }]);
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::Archive {
            pipeline_id: "p".into(),
        }))
        .then_expect_events(vec![PipelinesEvent::PipelineArchived {
            pipeline_id: "p".into(),
            new_default: Some("q".into()),
        }]);
    let mut archived = two_pipelines();
    archived.push(PipelinesEvent::PipelineArchived {
        pipeline_id: "q".into(),
        new_default: None,
    });
    pipelines()
        .given(archived.clone())
        .when(admin(PipelinesAction::SetDefault {
            pipeline_id: "q".into(),
        }))
        .then_expect_error(DomainError::InvalidTransition(
            "the pipeline is archived".into(),
        ));
    pipelines()
        .given(archived)
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "q".into(),
            stage: stage("y"),
            position: None,
        }))
        .then_expect_error(DomainError::InvalidTransition(
            "the pipeline is archived".into(),
        ));
}

#[test]
fn stages_are_added_where_asked_and_ids_are_unique_across_pipelines() {
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "p".into(),
            stage: stage("d"),
            position: Some(1),
        }))
        .then_expect_events(vec![added("p", "d", 1)]);
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "p".into(),
            stage: stage("d"),
            position: Some(99),
        }))
        .then_expect_events(vec![added("p", "d", 3)]);
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "p".into(),
            stage: stage("x"),
            position: None,
        }))
        .then_expect_error(DomainError::AlreadyExists);
}

#[test]
fn automation_values_are_checked_and_normalised() {
    let mut with_steps = stage("d");
    with_steps.automation = vec![
        StageAutomation {
            kind: AutomationKind::SetPriority,
            value: " high ".into(),
        },
        StageAutomation {
            kind: AutomationKind::AddLabel,
            value: " hot lead ".into(),
        },
    ];
    let mut normalised = with_steps.clone();
    normalised.automation[0].value = "HIGH".into();
    normalised.automation[1].value = "hot lead".into();
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "p".into(),
            stage: with_steps,
            position: None,
        }))
        .then_expect_events(vec![PipelinesEvent::StageAdded {
            pipeline_id: "p".into(),
            stage: normalised,
            position: 3,
        }]);
    let mut bad = stage("d");
    bad.automation = vec![StageAutomation {
        kind: AutomationKind::SetPriority,
        value: "soon".into(),
    }];
    pipelines()
        .given(two_pipelines())
        .when(admin(PipelinesAction::AddStage {
            pipeline_id: "p".into(),
            stage: bad,
            position: None,
        }))
        .then_expect_error(DomainError::InvalidInput(
            "SET_PRIORITY needs URGENT, HIGH, MEDIUM or LOW".into(),
        ));
}

#[test]
fn reorder_must_name_each_stage_of_the_pipeline_once() {
    let reorder = |ids: &[&str]| {
        admin(PipelinesAction::ReorderStages {
            pipeline_id: "p".into(),
            stage_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
    };
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["c", "a", "b"]))
        .then_expect_events(vec![PipelinesEvent::StagesReordered {
            pipeline_id: "p".into(),
            stage_ids: vec!["c".into(), "a".into(), "b".into()],
        }]);
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["c", "a", "zz"]))
        .then_expect_error(DomainError::InvalidInput(
            "stage zz is not a stage of this pipeline".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["c", "a", "x"]))
        .then_expect_error(DomainError::InvalidInput(
            "stage x is not a stage of this pipeline".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["c", "a", "a"]))
        .then_expect_error(DomainError::InvalidInput("stage a is named twice".into()));
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["c", "a"]))
        .then_expect_error(DomainError::InvalidInput(
            "stageIds must name all 3 stages of the pipeline".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(reorder(&["a", "b", "c"]))
        .then_expect_events(vec![]);
}

#[test]
fn a_stage_holding_cards_is_removed_only_with_a_target_in_the_same_pipeline() {
    let remove = |to: Option<&str>, cards: u64| {
        admin(PipelinesAction::RemoveStage {
            stage_id: "b".into(),
            move_cards_to: to.map(str::to_string),
            cards_in_stage: cards,
        })
    };
    pipelines()
        .given(two_pipelines())
        .when(remove(None, 4))
        .then_expect_error(DomainError::InvalidTransition(
            "the stage holds 4 cards: name a stage to move them to".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(remove(Some("x"), 4))
        .then_expect_error(DomainError::InvalidInput(
            "stage x is not a stage of this pipeline".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(remove(Some("b"), 4))
        .then_expect_error(DomainError::InvalidInput(
            "cards cannot move to the stage being removed".into(),
        ));
    pipelines()
        .given(two_pipelines())
        .when(remove(Some("c"), 4))
        .then_expect_events(vec![PipelinesEvent::StageRemoved {
            pipeline_id: "p".into(),
            stage_id: "b".into(),
            cards_moved_to: Some("c".into()),
        }]);
    pipelines()
        .given(two_pipelines())
        .when(remove(None, 0))
        .then_expect_events(vec![PipelinesEvent::StageRemoved {
            pipeline_id: "p".into(),
            stage_id: "b".into(),
            cards_moved_to: None,
        }]);
}

#[test]
fn cards_of_a_removed_stage_find_their_way_home() {
    let mut state = OrganizationPipelines::default();
    for event in two_pipelines() {
        state.apply(event);
    }
    for event in [
        PipelinesEvent::StageRemoved {
            pipeline_id: "p".into(),
            stage_id: "b".into(),
            cards_moved_to: Some("c".into()),
        },
        PipelinesEvent::StageRemoved {
            pipeline_id: "p".into(),
            stage_id: "c".into(),
            cards_moved_to: None,
        },
    ] {
        state.apply(event);
    }
    let p = state.pipeline("p").expect("pipeline");
    // b -> c (removed too, no target) -> the first stage.
    assert_eq!(p.home_of("b").map(|s| s.stage_id.as_str()), Some("a"));
    assert_eq!(p.home_of("a").map(|s| s.stage_id.as_str()), Some("a"));
    assert_eq!(
        state.pipeline_of_stage("b").map(|p| p.pipeline_id.as_str()),
        Some("p")
    );
}

fn card_command(role: Role, action: CardAction) -> CardCommand {
    CardCommand {
        organization: "acme".into(),
        actor: Actor::new("ana", role),
        action,
    }
}

fn stage_ref(pipeline: &str, stage: &str, automation: Vec<StageAutomation>) -> StageRef {
    StageRef {
        pipeline_id: pipeline.into(),
        stage_id: stage.into(),
        automation,
    }
}

fn label_step(value: &str) -> StageAutomation {
    StageAutomation {
        kind: AutomationKind::AddLabel,
        value: value.into(),
    }
}

fn placed() -> CardEvent {
    CardEvent::CardPlaced {
        organization: "acme".into(),
        pipeline_id: "p".into(),
        conversation_id: "conv".into(),
        stage_id: "a".into(),
        position: None,
        automation: vec![],
    }
}

fn cards() -> TestFramework<Card> {
    TestFramework::with(())
}

#[test]
fn a_conversation_is_placed_once_per_pipeline() {
    let place = card_command(
        Role::Agent,
        CardAction::Place {
            conversation_id: "conv".into(),
            stage: stage_ref("p", "a", vec![]),
            position: None,
        },
    );
    cards()
        .given_no_previous_events()
        .when(place.clone())
        .then_expect_events(vec![placed()]);
    cards()
        .given(vec![placed()])
        .when(place)
        .then_expect_error(DomainError::AlreadyExists);
    cards()
        .given_no_previous_events()
        .when(card_command(
            Role::Analyst,
            CardAction::Place {
                conversation_id: "conv".into(),
                stage: stage_ref("p", "a", vec![]),
                position: None,
            },
        ))
        .then_expect_error(DomainError::NotPermitted(
            "the analyst role may not change pipeline cards".into(),
        ));
}

#[test]
fn moving_a_card_to_another_pipelines_stage_is_refused() {
    cards()
        .given(vec![placed()])
        .when(card_command(
            Role::Agent,
            CardAction::Move {
                stage: stage_ref("q", "x", vec![]),
                position: None,
            },
        ))
        .then_expect_error(DomainError::InvalidInput(
            "the stage belongs to another pipeline than the card".into(),
        ));
}

#[test]
fn a_move_between_stages_is_a_new_entry_owing_the_stages_automation() {
    cards()
        .given(vec![placed()])
        .when(card_command(
            Role::Agent,
            CardAction::Move {
                stage: stage_ref("p", "b", vec![label_step("hot")]),
                position: Some(0),
            },
        ))
        .then_expect_events(vec![CardEvent::CardMoved {
            from_stage_id: "a".into(),
            to_stage_id: "b".into(),
            position: Some(0),
            entry: 2,
            automation: vec![label_step("hot")],
        }]);
    // Within its own stage only the place changes: no entry, no automation.
    cards()
        .given(vec![placed()])
        .when(card_command(
            Role::Agent,
            CardAction::Move {
                stage: stage_ref("p", "a", vec![label_step("hot")]),
                position: Some(3),
            },
        ))
        .then_expect_events(vec![CardEvent::CardMoved {
            from_stage_id: "a".into(),
            to_stage_id: "a".into(),
            position: Some(3),
            entry: 1,
            automation: vec![],
        }]);
}

#[test]
fn automation_is_recorded_once_for_the_entry_that_owes_it() {
    let moved = CardEvent::CardMoved {
        from_stage_id: "a".into(),
        to_stage_id: "b".into(),
        position: None,
        entry: 2,
        automation: vec![label_step("hot")],
    };
    let outcome = AutomationOutcome {
        step: label_step("hot"),
        ok: true,
        detail: None,
    };
    let record = |entry| {
        card_command(
            Role::Service,
            CardAction::RecordAutomation {
                entry,
                outcomes: vec![outcome.clone()],
            },
        )
    };
    let ran = CardEvent::CardAutomationRan {
        entry: 2,
        stage_id: "b".into(),
        outcomes: vec![outcome.clone()],
    };
    cards()
        .given(vec![placed(), moved.clone()])
        .when(record(2))
        .then_expect_events(vec![ran.clone()]);
    cards()
        .given(vec![placed(), moved.clone(), ran.clone()])
        .when(record(2))
        .then_expect_events(vec![]);
    // A later move supersedes what the earlier entry owed.
    let moved_again = CardEvent::CardMoved {
        from_stage_id: "b".into(),
        to_stage_id: "c".into(),
        position: None,
        entry: 3,
        automation: vec![],
    };
    cards()
        .given(vec![placed(), moved.clone(), moved_again])
        .when(record(2))
        .then_expect_events(vec![]);
    cards()
        .given(vec![placed(), moved])
        .when(card_command(
            Role::Agent,
            CardAction::RecordAutomation {
                entry: 2,
                outcomes: vec![outcome],
            },
        ))
        .then_expect_error(DomainError::NotPermitted(
            "the agent role may not change pipeline cards".into(),
        ));
    // The label an automation added is the card's.
    let mut card = Card::default();
    card.apply(placed());
    card.apply(ran);
    assert!(card.labels().contains("hot"));
    assert!(card.pending_automation().is_none());
}

#[test]
fn labels_are_added_once_and_removed_quietly() {
    cards()
        .given(vec![placed()])
        .when(card_command(
            Role::Agent,
            CardAction::AddLabel {
                label: " vip ".into(),
            },
        ))
        .then_expect_events(vec![CardEvent::CardLabelAdded {
            label: "vip".into(),
        }]);
    cards()
        .given(vec![
            placed(),
            CardEvent::CardLabelAdded {
                label: "vip".into(),
            },
        ])
        .when(card_command(
            Role::Agent,
            CardAction::AddLabel {
                label: "vip".into(),
            },
        ))
        .then_expect_events(vec![]);
    cards()
        .given(vec![placed()])
        .when(card_command(
            Role::Agent,
            CardAction::RemoveLabel {
                label: "vip".into(),
            },
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_rehome_moves_only_a_card_still_in_the_removed_stage() {
    let rehome = card_command(
        Role::Service,
        CardAction::Rehome {
            from_stage_id: "a".into(),
            stage: stage_ref("p", "c", vec![]),
        },
    );
    cards()
        .given(vec![placed()])
        .when(rehome.clone())
        .then_expect_events(vec![CardEvent::CardMoved {
            from_stage_id: "a".into(),
            to_stage_id: "c".into(),
            position: None,
            entry: 2,
            automation: vec![],
        }]);
    // A user moved it out first: their move stands.
    let moved_by_user = CardEvent::CardMoved {
        from_stage_id: "a".into(),
        to_stage_id: "b".into(),
        position: None,
        entry: 2,
        automation: vec![],
    };
    cards()
        .given(vec![placed(), moved_by_user])
        .when(rehome)
        .then_expect_events(vec![]);
}
