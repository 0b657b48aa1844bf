"""Generic phrase banks for the synthetic contact-center generator.

Data only. Banks are keyed by the behaviour or intent they express, so the
renderer picks a phrasing and the label model never sees the words: labels
come from *which* bank was used (behaviour performed or missed), and tests can
check that a behaviour is visible by searching for its bank's phrasings.
"""

COMPANIES = ("Northwind", "Bluepeak", "Veridia", "Orbitel", "Lumen Home", "Crestline")
AGENT_NAMES = (
    "Priya", "Marcus", "Elena", "James", "Aisha", "Tom", "Sofia", "Daniel", "Mei", "Carlos",
    "Hannah", "Omar", "Grace", "Luca", "Nadia", "Ben", "Chloe", "Ravi", "Emma", "Jorge",
    "Fatima", "Sam", "Olivia", "Kenji", "Maya", "Victor", "Leah", "Andre", "Zoe", "Patrick",
)
FIRST_NAMES = (
    "Dana", "Michael", "Sarah", "Kevin", "Linda", "Brian", "Jessica", "Robert", "Angela", "Steven",
    "Tanya", "Derek", "Monica", "Gary", "Rachel", "Luis", "Karen", "Ahmed", "Julie", "Frank",
    "Naomi", "Trevor", "Irene", "Wesley", "Colleen", "Hector", "Brenda", "Ian", "Yolanda", "Neil",
)
LAST_NAMES = (
    "Whitfield", "Okafor", "Brennan", "Nguyen", "Castillo", "Hargrove", "Patel", "Lindqvist",
    "Moreau", "Kowalski", "Adeyemi", "Thornton", "Ramirez", "Fischer", "O'Donnell", "Sato",
    "Delgado", "McKenzie", "Abernathy", "Chowdhury", "Varga", "Holloway", "Bianchi", "Stroud",
)
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me")
PLANS = ("Basic 100", "Fiber 300", "Unlimited Plus", "Family 4-line", "Premium TV", "Starter")
NEW_PLANS = ("Fiber 900", "Gigabit Pro", "Unlimited Max", "Family 6-line", "Ultra Bundle")
DEVICES = ("router", "modem", "set-top box", "mesh extender", "smart hub", "gateway")
PRODUCTS = (
    "wireless earbuds", "coffee maker", "smart thermostat", "tablet", "robot vacuum",
    "blender", "security camera", "smartwatch", "air fryer", "bluetooth speaker",
)
CARRIERS = ("FastShip", "ParcelGo", "the courier", "QuickPost")
SPEEDS = ("300 megabits", "500 megabits", "a gig", "900 megabits", "150 megabits")

# --- Agent: opening ---------------------------------------------------------
GREET_GOOD = (
    "Thank you for {contacting} {company}, my name is {agent}. How can I help you today?",
    "Good {tod}, you've reached {company} support. This is {agent}, how may I help?",
    "Hi, thanks for contacting {company}. I'm {agent}, what can I do for you today?",
    "Welcome to {company} customer care, {agent} speaking. How can I assist you?",
    "Hello and thank you for reaching out to {company}. My name is {agent}. What brings you in today?",
    "Good {tod}, this is {agent} with {company}. How can I help?",
)
GREET_POOR = (
    "Yeah, support, go ahead.",
    "Hi. What's the problem?",
    "{company}. What do you need?",
    "Hello?",
    "Yep, what's up.",
    "Support. Go on.",
)
ACK_WAIT = (
    "I'm sorry about the long wait today, we're seeing really high volumes.",
    "Apologies for the wait, and thanks for hanging on.",
    "First of all, I'm sorry you had to wait so long to reach us.",
    "Sorry to keep you waiting so long, I appreciate your patience.",
)
WAIT_COMPLAINT = (
    "I've been waiting {wait} minutes just to get through.",
    "I was on hold for {wait} minutes before you picked up!",
    "It took {wait} minutes to reach a human.",
    "{wait} minutes in the queue, seriously.",
)

# --- Customer: opening mood and history cues -------------------------------
MOOD_PREFIX = {
    "calm": ("Hi,", "Hello there.", "Hi, thanks.", "Good {tod}.", "Hi there,", "Hello,"),
    "frustrated": (
        "I'm getting pretty frustrated here.", "Honestly this has been really annoying.",
        "Ugh, okay.", "I'm not happy about this.", "This is so frustrating.",
    ),
    "angry": (
        "This is ridiculous!", "I am absolutely fed up with you people.",
        "Are you kidding me?", "I'm furious right now.", "This is completely unacceptable!",
    ),
}
ANGRY_INTERJECTIONS = (
    "Seriously?", "Unbelievable.", "This is a JOKE.", "Come ON.", "I can't believe this.",
)
JOURNEY_CUES = {
    "first_contact": (
        "", "", "This is my first time reaching out about this.",
        "I haven't contacted you about this before, but",
    ),
    "follow_up": (
        "I'm following up on my call from {days_ago}.",
        "I spoke to someone {days_ago} and they said they'd call me back, but nobody did.",
        "I have an open ticket from {days_ago}, and I was told to call back if it wasn't sorted.",
        "I'm checking back in as promised, the agent {days_ago} asked me to.",
    ),
    "repeat_issue": (
        "This is the {ordinal} time I'm contacting you about this in a month.",
        "This same problem keeps coming back, it was supposedly fixed {days_ago}.",
        "It's happening again. I've already called {prior} times about this.",
        "Same issue as before, for the {ordinal} time now.",
    ),
    "escalation": (
        "I already went through this with another agent and I need it escalated.",
        "I want to speak to a supervisor, the last person couldn't help me.",
        "I was told this would be escalated and I want to make sure it actually is.",
        "I need someone more senior on this, I've been passed around enough.",
    ),
    "retention_save": (
        "Honestly, I'm thinking about cancelling and switching to another provider.",
        "If this isn't fixed I'm going to close my account.",
        "I'm seriously considering leaving {company} over this.",
        "I'm about ready to take my business somewhere else.",
    ),
    "onboarding": (
        "I just signed up {tenure_ago} and",
        "I'm a brand-new customer, my account was only set up {tenure_ago}.",
        "I'm still getting set up, I only joined {company} {tenure_ago}.",
        "I'm new to {company}, just started {tenure_ago}, and",
    ),
}
# Issues that are requests, not faults, and the repeat cues that fit them too: "It's happening
# again" had opened a question about the contract end date.
REQUEST_ISSUES = ("general_inquiry", "plan_upgrade", "cancellation")
REPEAT_REQUEST_CUES = (JOURNEY_CUES["repeat_issue"][0], JOURNEY_CUES["repeat_issue"][3])
CANCEL_THREAT = (
    "Honestly, if this keeps up I'm switching providers.",
    "If this isn't sorted I'm cancelling, I mean it.",
    "I'm this close to closing my account.",
)
SECONDARY_INTRO = (
    "Oh, and while I have you,", "One more thing,", "Also,", "Actually, before I forget,",
)
SECONDARY_ACK = (  # a lead-in; the issue's own secondary answer says what was done
    "Sure, let me look at that too.", "Of course.", "Good you mentioned it.", "Let me check... okay.", "",
)

# --- Agent: acknowledging the problem ---------------------------------------
EMPATHY = (
    "I'm really sorry to hear that, that sounds frustrating.",
    "I completely understand how annoying that must be.",
    "I'm sorry you've had to deal with this, let's get it sorted.",
    "That's definitely not the experience we want for you, I apologise.",
    "I hear you, and I'd be upset too.",
    "Thank you for bearing with this, I know it's been a hassle.",
)
NEUTRAL_ACK = ("Okay.", "Right.", "Alright.", "Mm-hm.", "Fine.", "Okay, noted.")
DISMISSIVE = (
    "Well, that's just how it works.",
    "I just work here, so.",
    "Look, no need to get worked up.",
    "I can only do what the system lets me.",
)

# --- Identity verification --------------------------------------------------
# (agent asks, customer answers): what is asked is what is answered.
VERIFY = (
    ("Can I get your account number and the postcode on file to verify you?",
     "Sure, the account number ends in {last4} and the postcode is {zip}."),
    ("To keep your account safe I need to verify you first. What's the account PIN?",
     "Yeah, the PIN is {pin}."),
    ("Could you confirm the last four digits of the account number and your postcode, please?",
     "Postcode {zip}, account ending in {last4}."),
    ("For security, what's the PIN on the account?",
     "It's {pin}."),
    ("Before we go any further, can you verify the account number for me?",
     "it's the account ending {last4}."),
)
# The same checks when the customer volunteers personal data.
VERIFY_PII = (
    ("Before we go further, can you confirm the full name and phone number on the account?",
     "It's {name}, and the phone number is {phone}."),
    ("For security, could you verify your name and the email address on the account?",
     "My name is {name}, email {email}."),
    ("Can I get your full name, phone number and email to verify you?",
     "{name}, phone {phone}, email is {email}."),
    ("Could you confirm your name and a contact number, please?",
     "Sure, {name}. You can reach me at {phone}."),
)
VERIFY_ASK = tuple(ask for ask, _ in VERIFY + VERIFY_PII)
VERIFIED = (
    "Thank you, you're verified.", "Perfect, that matches what I have.",
    "Thanks, that's all confirmed.", "Great, you're verified now.",
)
NO_VERIFY_LOOKUP = (
    "Let me just pull up the account from the details I have here.",
    "I'll look you up by your number.",
    "Let me find the account real quick.",
)
PII_INTRO = (
    "This is {name} by the way, my number is {phone}.",
    "My name's {name}, my email is {email} if you need it.",
    "It's {name}, you can reach me on {phone}.",
)
CARD_MENTION = (
    "If it helps, the card on file is {card}.",
    "You can use my card, it's {card}.",
    "The payment was on my card {card}.",
)
TENURE_AGENT = (
    "I can see you've been with us for {tenure}.",
    "I see you've been a customer for {tenure}.",
    "Your account shows {tenure} with us.",
)
TENURE_CUSTOMER = (
    "I've been a customer for {tenure}.",
    "I've been with you for {tenure}.",
    "I've had this account for {tenure}.",
)

# --- Holds and inefficiency -------------------------------------------------
HOLD_ASK = (
    "Let me look into that, can I place you on a brief hold?",
    "Give me a moment to check this, I'll put you on hold.",
    "I need to check with another system, please hold.",
    "Bear with me while I look into it.",
)
HOLD_OK = ("Sure.", "ok", "Fine, but please be quick.", "yeah go ahead", "okay.")
HOLD_RETURN = (
    "Thanks for holding.", "Thank you for your patience.", "Okay, I'm back.",
    "Sorry that took a while.", "Thanks for waiting.",
)
FILLER = (
    ("Sorry, can you repeat that?", "I just told you... fine."),
    ("Hang on, my system is really slow today.", "ok"),
    ("Wait, what was the issue again?", "Again? ok..."),
    ("Sorry, I lost my place, give me a second.", "sure"),
    ("Hmm, one second, this screen isn't loading.", "okay..."),
)

# --- Resolution -------------------------------------------------------------
UNRESOLVED = (
    "Unfortunately, I'm not able to fix this from my side today.",
    "I'm afraid there isn't anything else I can do about this right now.",
    "I've tried everything I can on my end, and I can't resolve it on this {contact}.",
    "That's not something I can change, I'm sorry.",
)
ESCALATE_PROTOCOL = (
    "I'm escalating this to our {team} team. I've written up everything, so you won't have to repeat yourself. Your reference is {ref}.",
    "This needs our {team} specialists. I'll brief them before I transfer you, and your case number is {ref}.",
    "I'm raising this with {team} as a priority case, reference {ref}, and I'll explain everything to them as I hand you over.",
)
ESCALATE_COLD = (
    "I can't do this, I'll send you to {team}.",
    "Transferring you.",
    "You need to talk to {team}, hold on.",
    "Not my department. Putting you through.",
)
RETENTION_OFFER = (
    "I'd really hate to lose you as a customer. I can offer you {offer} if you stay with us.",
    "Before you decide, I can do {offer} to make things right.",
    "What if I added {offer} to the account? Would that change your mind?",
)
OFFERS = (
    "20% off your bill for the next six months", "a free upgrade to {new_plan} for three months",
    "a $50 loyalty credit", "half price for the next three months",
)
RETENTION_REPLY = {
    "resolved": ("Okay, that makes it worth staying.", "Alright, I'll stay for that.",
                 "fine, that works, I'll stay."),
    "partially": ("I'll think about it.", "Maybe. Let me think it over.",
                  "I'm not sure yet, I'll decide this week."),
    "unresolved": ("No, I've made up my mind. Please go ahead and cancel.",
                   "No thanks, I still want to leave.", "That's not enough, cancel it."),
    "escalated": ("Let me talk to someone who can actually do more.",
                  "I want to speak with the retention team directly."),
}
RETENTION_FOLLOW = {
    "resolved": "Great, I've applied that to your account.",
    "partially": "No problem, the offer stays open for 14 days.",
    "unresolved": "Understood. I've processed the cancellation, effective {date}.",
}

# --- Checking and wrapping up -----------------------------------------------
# "Working now?" fits a fix (a connection, a login, a device); a bill, refund or order is checked, not tested.
CONFIRM_FIXED = (
    "Could you check if it's working on your end now?",
    "Is that working for you now?",
    "Can you try it once more while I'm still here?",
)
CONFIRM_DONE = (  # (question, the answers that fit it) for a resolved call
    ("Does that fully resolve the issue for you?", ("Yes, it does, thanks.", "Yes, that's everything.",
                                                    "yes that's sorted, thanks.")),
    ("Can you confirm you can see the change on your side?", ("Yes, I can see it.", "Yep, it's there now.",
                                                              "yes i see it.")),
    ("Is there anything about that you'd like me to go over again?", ("No, that's clear.", "No, all clear, thanks.",
                                                                     "no, got it.")),
)
FIXED_ISSUES = ("internet_connectivity", "account_access", "product_defect", "technical_setup")
CONFIRM_OTHER = (
    "Does that plan make sense to you?",
    "Is everything clear about what happens next?",
    "Does that answer your question for now?",
)
# After "I've processed the cancellation": the questions are CONFIRM_OTHER's (so a confirm is read
# the same way), answered as a customer who got what they asked for; "No, it's still not fixed."
# had answered 44% of them.
CONFIRM_CANCELLED = (
    (CONFIRM_OTHER[0], ("Yes, it does.", "Yes, that makes sense.", "yeah, makes sense.")),
    (CONFIRM_OTHER[1], ("Yes, that's clear.", "Yes, I understand.", "ok, got it.")),
)
CONFIRM_REPLY = {
    "fixed": ("Yes, it's working now.", "Yep, looks good now.", "yes that's sorted, thanks."),
    "partially": ("Sort of, part of it is still not right.", "Mostly, yeah.", "kind of."),
    "unresolved": ("No, it's still not fixed.", "Not really.", "no."),
    "escalated": ("I guess so.", "Yes, I understand.", "ok."),
}
NEXT_STEPS_ESCALATED = (
    "The {team} team will contact you within 48 hours, and your reference is {ref}.",
    "Expect a call from {team} by {date}; quote {ref} if you need to chase it.",
)
ANYTHING_ELSE = (
    "Is there anything else I can help you with today?",
    "Anything else I can do for you?",
    "Is there anything else you need while I have you?",
)
CLOSE_GOOD = (
    "Thanks for {contacting} {company}, have a great {tod}!",
    "Thank you for your time, and enjoy the rest of your {tod}.",
    "It was a pleasure helping you. Take care!",
    "Thanks again for choosing {company}. Have a good one!",
)
CLOSE_POOR = ("Ok. Bye.", "Alright.", "Yep.", "")
CALL_END = {"call": "[Call ended]", "chat": "[Chat ended]"}

# A sign-off that says nothing about how it went (many customers close this way whatever they felt).
SIGN_OFFS = ("Okay. Bye.", "Alright, bye.", "Okay, that's all then.", "Right. Bye now.", "Got it. Bye.",
             "Okay, thanks. Bye.")
# Customer's last words, by satisfaction (index = csat - 1).
CSAT_LINES = (
    ("This was useless. I'm done.", "Worst support I've ever had.",
     "Unbelievable. Thanks for nothing.", "I'm going to leave a terrible review."),
    ("I'm still not happy about this, honestly.", "This took way too long.",
     "I expected a lot better, but fine.", "Not great, but okay."),
    ("Okay, I guess that's fine.", "Fine. Thanks.",
     "Alright, we'll see if it works.", "Sure, okay."),
    ("Thanks, that's helpful.", "Great, thank you.",
     "Okay good, thanks for sorting that out.", "Alright, appreciate it."),
    ("Thank you so much, you've been amazing!", "Wow, that was quick. Really appreciate your help!",
     "Perfect, thanks a ton, great service.", "You've made my day, thank you!"),
)

# --- Disfluencies -----------------------------------------------------------
HESITATIONS = ("um,", "uh,", "so,", "like,", "um", "erm,")
