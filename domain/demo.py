"""A realistic demo: three regional organisations and their partners, a dozen
professionals and five clients whose plans span months.

Every command has a fixed command id, so loading the demo twice records
nothing new. The service's clock is moved through the months as the story
goes, so the history and the timeline look like months of real work. All
names are invented.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta

from domain.application import PlanService
from domain.values import Actor, today_in_finland

HVA = ("pirha-toike", "Pirkanmaan hyvinvointialue, työkyvyn tuki")
KELA = ("kela-pirkanmaa", "Kela, Pirkanmaan vakuutuspiiri")
TYO = ("tampere-tyollisyys", "Tampereen seudun työllisyysalue")
YHD = ("vire-ry", "Mielenterveysyhdistys Vire ry")
KUN = ("kuntoutus-oy", "Kuntoutuskeskus Liike Oy")


def _person(person_id: str, name: str, organisation: tuple[str, str]) -> Actor:
    return Actor(person_id=person_id, name=name, organisation_id=organisation[0], organisation_name=organisation[1])


CLIENT = _person("matti.esimerkki", "Matti Esimerkki", ("", ""))
"""The demo client (Matti's own account signs in as this person): no organisation."""

PEOPLE = {
    "aino": (_person("aino.virtanen", "Aino Virtanen", HVA), "kuntoutusohjaaja"),
    "mikko": (_person("mikko.laine", "Mikko Laine", HVA), "lääkäri"),
    "sanna": (_person("sanna.koski", "Sanna Koski", HVA), "psykiatrinen sairaanhoitaja"),
    "jari": (_person("jari.heikkinen", "Jari Heikkinen", HVA), "fysioterapeutti"),
    "leena": (_person("leena.makinen", "Leena Mäkinen", HVA), "sosiaalityöntekijä"),
    "pekka": (_person("pekka.nieminen", "Pekka Nieminen", KELA), "Kelan asiantuntija"),
    "riikka": (_person("riikka.salo", "Riikka Salo", KELA), "kuntoutusasiantuntija"),
    "timo": (_person("timo.lehtonen", "Timo Lehtonen", TYO), "OMA-valmentaja"),
    "hanna": (_person("hanna.jarvinen", "Hanna Järvinen", TYO), "työllisyysasiantuntija"),
    "outi": (_person("outi.rantanen", "Outi Rantanen", YHD), "vertaisohjaaja"),
    "kalle": (_person("kalle.hakala", "Kalle Hakala", KUN), "psykologi"),
    "maria": (_person("maria.lindqvist", "Maria Lindqvist", KUN), "toimintaterapeutti"),
}


def load_demo(service: PlanService, today: date | None = None) -> list[str]:
    """Load the demo plans; returns their ids. Safe to run again."""
    story = _Story(service, today or today_in_finland())
    return [
        story.matti(),
        story.liisa(),
        story.ahmed(),
        story.eeva(),
        story.johan(),
    ]


class _Story:
    def __init__(self, service: PlanService, today: date):
        self.service = service
        self.today = today
        self.plan_id = ""
        self.prefix = ""
        self.counter = 0
        self.day = today

    @contextmanager
    def _plan(self, prefix: str, days_ago: int) -> Iterator[None]:
        original_clock = self.service.clock
        self.prefix, self.counter = prefix, 0
        self.day = self.today - timedelta(days=days_ago)
        self.service.clock = lambda: datetime.combine(self.day, time(9, 0), UTC) + timedelta(minutes=self.counter)
        try:
            yield
        finally:
            self.service.clock = original_clock

    def _next_id(self) -> str:
        self.counter += 1
        return f"demo-{self.prefix}-{self.counter}"

    def _later(self, days: int) -> None:
        self.day = min(self.day + timedelta(days=days), self.today)

    def _date(self, days_from_now: int) -> date:
        return self.day + timedelta(days=days_from_now)

    def _open(self, who: str, client: str, segment: str, language: str, referrer: str) -> None:
        actor, profession = PEOPLE[who]
        outcome = self.service.open_plan(
            by=actor,
            command_id=self._next_id(),
            client_name=client,
            segment=segment,
            language=language,
            referring_party=referrer,
            expert_profession=profession,
            expert_contact=f"{actor.person_id}@example.fi",
        )
        self.plan_id = outcome.plan_id

    def _do(self, who: str, command: str, command_id: str | None = None, **fields: object) -> str | None:
        actor = PEOPLE[who][0]
        command_id = command_id or self._next_id()
        outcome = getattr(self.service, command)(self.plan_id, by=actor, command_id=command_id, **fields)
        return outcome.item_id

    def _revision(self, kind: str, item_id: str) -> int:
        return getattr(self.service.get_plan(self.plan_id), kind)[item_id].revision

    def _consent_and_add(self, who_records: str, *members: str) -> dict[str, str]:
        plan = self.service.get_plan(self.plan_id)
        added = {}
        for name in members:
            actor, profession = PEOPLE[name]
            consent_command_id = self._next_id()
            if not plan.valid_consent_for(actor.organisation_id, self.day):
                self._do(
                    who_records,
                    "give_consent",
                    command_id=consent_command_id,
                    organisation_id=actor.organisation_id,
                    organisation_name=actor.organisation_name,
                    valid_from=self.day,
                )
                plan = self.service.get_plan(self.plan_id)
            added[name] = self._do(
                who_records,
                "add_member",
                person_id=actor.person_id,
                name=actor.name,
                profession=profession,
                organisation_id=actor.organisation_id,
                organisation_name=actor.organisation_name,
                contact=f"{actor.person_id}@example.fi",
            )
        return added

    def _progress(self, who: str, step_id: str, status: str, outcome: str = "") -> None:
        self._do(
            who,
            "progress_step",
            step_id=step_id,
            seen_revision=self._revision("steps", step_id),
            status=status,
            on=self.day,
            outcome=outcome,
        )

    def matti(self) -> str:
        """Unemployed, back pain and low mood; a handover from the county to Kela."""
        with self._plan("matti", days_ago=160):
            self._open("aino", "Matti Esimerkki", "unemployed", "fi", "employment_services")
            members = self._consent_and_add("aino", "mikko", "pekka", "timo")
            back = self._do("aino", "record_need", category="health", description="Pitkittynyt alaselkäkipu", financial="Työmarkkinatuki, vuokrarästejä")
            work = self._do("aino", "record_need", category="work_and_employment", description="Ei työpaikkaa 2 vuoteen; aiempi työ varastolla ei enää sovi", financial="")
            daily = self._do("aino", "record_need", category="everyday_life", description="Unirytmi sekaisin, mieliala matala")
            self._do("aino", "record_measure", kind="work_ability_score", value=4, measured_on=self.day)
            self._do("aino", "name_counterpart", member_id=members["pekka"], seen_revision=0)
            goal = self._do("aino", "set_goal", title="Kipu hallinnassa niin, että jaksaa 4 tuntia kevyttä työtä", need_ids=[back, work], target_date=self._date(150))
            rhythm = self._do("aino", "set_goal", title="Säännöllinen päivärytmi", need_ids=[daily], target_date=self._date(60))
            assessment = self._do("mikko", "plan_step", title="Työkyvyn arvio lääkärillä", need_id=back, responsible_member_id=members["mikko"], planned_start=self._date(7), planned_end=self._date(7))
            rehab = self._do("aino", "plan_step", title="Fysioterapiajakso", need_id=back, service="Fysioterapia", responsible_member_id=members["mikko"], planned_start=self._date(14), planned_end=self._date(70))
            coaching = self._do("timo", "plan_step", title="Työkokeilu kevyissä tehtävissä", need_id=work, service="Työkokeilu", responsible_member_id=members["timo"], planned_start=self._date(90), planned_end=self._date(150))
            self._later(7)
            self._progress("mikko", assessment, "done", "Työkyky osittain alentunut; kevyt työ mahdollista")
            self._later(7)
            self._progress("aino", rehab, "started")
            self._do("aino", "add_note", text="Asiakas motivoitunut, toivoo työkokeilua keväällä.")
            self._later(40)
            self._do("aino", "record_measure", kind="work_ability_score", value=6, measured_on=self.day)
            self._do("timo", "reschedule_step", step_id=coaching, seen_revision=self._revision("steps", coaching), planned_start=self._date(21), planned_end=self._date(90), reason="Työkokeilupaikka vapautui aiemmin")
            self._later(20)
            self._progress("aino", rehab, "done", "Kipu helpottanut, liikkuminen sujuu")
            handover = self._do("aino", "propose_handover", note="Kuntoutuksen jatko Kelan ammatillisena kuntoutuksena; jään vastinpariksi.")
            self._later(2)
            self._do("pekka", "accept_handover", handover_id=handover, note="Otan vastuun.")
            self._later(10)
            self._progress("timo", coaching, "started")
            self._do("pekka", "revise_goal", goal_id=goal, seen_revision=self._revision("goals", goal), title="Kipu hallinnassa niin, että jaksaa 6 tuntia työtä", need_ids=[back, work], target_date=self._date(120))
            self._do("pekka", "add_note", text="Hei Matti! Työkokeilu jatkuu marraskuun alkuun. Soitan sinulle ensi viikolla.", visibility="client_and_professionals")
            # Matti's own view of a goal, from his own account (the client's view of the plan)
            self.service.record_client_view_on_goal(self.plan_id, by=CLIENT, command_id=self._next_id(), goal_id=rhythm, seen_revision=self._revision("goals", rhythm), stance="questions", comment="Aamut ovat minulle vaikeita. Aloittaisin heräämällä yhdeksältä ja aikaistaisin siitä vähitellen.")
            return self.plan_id

    def liisa(self) -> str:
        """Employed but on long sick leave; works with occupational rehabilitation."""
        with self._plan("liisa", days_ago=120):
            self._open("sanna", "Liisa Malliasiakas", "employed", "fi", "occupational_health_care")
            members = self._consent_and_add("sanna", "kalle", "riikka")
            mood = self._do("sanna", "record_need", category="health", description="Uupumus, pitkä sairausloma", financial="Sairauspäiväraha päättymässä")
            skills = self._do("sanna", "record_need", category="skills_and_competence", description="Työtehtävät muuttuneet digitaalisiksi")
            self._do("sanna", "record_measure", kind="self_assessment", value=3, measured_on=self.day)
            self._do("sanna", "name_counterpart", member_id=members["riikka"], seen_revision=0)
            self._do("sanna", "set_goal", title="Osasairauspäivärahalla takaisin töihin", need_ids=[mood, skills], target_date=self._date(100))
            therapy = self._do("kalle", "plan_step", title="Lyhytterapia 10 käyntiä", need_id=mood, service="Psykoterapia", responsible_member_id=members["kalle"], planned_start=self._date(10), planned_end=self._date(80))
            course = self._do("riikka", "plan_step", title="Digitaitojen kurssi", need_id=skills, responsible_member_id=members["riikka"], planned_start=self._date(60), planned_end=self._date(90))
            self._later(12)
            self._progress("kalle", therapy, "started")
            self._later(60)
            self._progress("riikka", course, "started")
            self._do("sanna", "record_measure", kind="self_assessment", value=6, measured_on=self.day)
            self._do("kalle", "add_note", text="Palaute asiakkaalle: jaksaminen parantunut.", visibility="client_and_professionals")
            return self.plan_id

    def ahmed(self) -> str:
        """An entrepreneur; the plan is closed with a return to work."""
        with self._plan("ahmed", days_ago=200):
            self._open("leena", "Ahmed Testinen", "entrepreneur", "en", "self_referral")
            members = self._consent_and_add("leena", "hanna", "jari")
            money = self._do("leena", "record_need", category="work_and_employment", description="Yrityksen tilauskanta hiipunut", financial="Toimeentulo epävarma, yrittäjän työttömyysturva selvitettävä")
            body = self._do("leena", "record_need", category="health", description="Olkapään rasitusvamma")
            self._do("leena", "name_counterpart", member_id=members["hanna"], seen_revision=0)
            goal = self._do("leena", "set_goal", title="Yritystoiminta kannattavaksi tai uusi ammatti", need_ids=[money], target_date=self._date(150))
            advice = self._do("hanna", "plan_step", title="Yrittäjäneuvonta", need_id=money, service="Yritysneuvonta", responsible_member_id=members["hanna"], planned_start=self._date(5), planned_end=self._date(40))
            physio = self._do("jari", "plan_step", title="Olkapään kuntoutus", need_id=body, responsible_member_id=members["jari"], planned_start=self._date(5), planned_end=self._date(60))
            self._later(5)
            self._progress("hanna", advice, "started")
            self._progress("jari", physio, "started")
            self._later(55)
            self._progress("hanna", advice, "done", "Uusi asiakassopimus")
            self._progress("jari", physio, "done", "Liikerata palautunut")
            self._later(60)
            self._do("leena", "settle_goal", goal_id=goal, seen_revision=self._revision("goals", goal), status="achieved", note="Yritys työllistää taas")
            self._do("leena", "close_plan", outcome="work", note="Palasi täysipäiväisesti yrittäjäksi.")
            return self.plan_id

    def eeva(self) -> str:
        """Unemployed young adult; a handover pending right now."""
        with self._plan("eeva", days_ago=75):
            self._open("timo", "Eeva Kuvitteellinen", "unemployed", "sv", "student_health_care")
            members = self._consent_and_add("timo", "aino", "outi", "maria")
            study = self._do("timo", "record_need", category="skills_and_competence", description="Ammatillinen koulutus kesken")
            daily = self._do("timo", "record_need", category="everyday_life", description="Sosiaalinen jännittäminen", financial="Asumistuki ja toimeentulotuki")
            self._do("timo", "name_counterpart", member_id=members["aino"], seen_revision=0)
            self._do("timo", "set_goal", title="Opinnot jatkuvat syksyllä", need_ids=[study], target_date=self._date(200))
            group = self._do("outi", "plan_step", title="Vertaisryhmä", need_id=daily, service="Vertaistuki", responsible_member_id=members["outi"], planned_start=self._date(10), planned_end=self._date(100))
            self._do("maria", "plan_step", title="Toimintaterapian arvio", need_id=daily, responsible_member_id=members["maria"], planned_start=self._date(30), planned_end=self._date(45))
            self._later(10)
            self._progress("outi", group, "started")
            self._later(60)
            self._do("timo", "propose_handover", note="Terveyspalvelujen osuus kasvaa; ehdotan vastuun siirtoa.")
            return self.plan_id

    def johan(self) -> str:
        """A plan closed with a continuation plan, then reopened."""
        with self._plan("johan", days_ago=300):
            self._open("jari", "Johan Exempel", "employed", "sv", "health_centre")
            members = self._consent_and_add("jari", "riikka")
            need = self._do("jari", "record_need", category="health", description="Polven nivelrikko, seisomatyö raskasta")
            self._do("jari", "name_counterpart", member_id=members["riikka"], seen_revision=0)
            self._do("jari", "set_goal", title="Sopivampi työtehtävä nykyisellä työnantajalla", need_ids=[need], target_date=self._date(120))
            survey = self._do("riikka", "plan_step", title="Ammatillisen kuntoutuksen selvitys", need_id=need, service="Kelan ammatillinen kuntoutus", responsible_member_id=members["riikka"], planned_start=self._date(20), planned_end=self._date(60))
            self._later(20)
            self._progress("riikka", survey, "started")
            self._later(40)
            self._progress("riikka", survey, "done", "Kuntoutustarve todettu; jatkuu Kelan palveluna")
            self._later(60)
            self._do("jari", "close_plan", outcome="continuation_kela", note="Jatkuu Kelan ammatillisena kuntoutuksena.")
            self._later(90)
            self._do("riikka", "reopen_plan", reason="Kuntoutusselvitys keskeytyi; tarvitaan uusi suunnitelma.")
            self._do("jari", "record_measure", kind="work_ability_score", value=5, measured_on=self.day)
            return self.plan_id
