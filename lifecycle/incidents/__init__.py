"""Personal-data breaches (개인정보 유출등, 개인정보 보호법 제34조): incidents, the members they
affect, the notice to them, the draft report to the regulator, the 72-hour clock.

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.notices``,
``lifecycle.channels``, ``lifecycle.vault``."""
